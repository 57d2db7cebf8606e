"""Windows: H = 50 action steps starting at a step that has a stored observation.

The policy sees images only at its query steps (every ``replan_steps`` policy steps after
LIBERO's wait steps), and the store keeps frames only there, so a window's first observation
``obs0`` is always a stored frame. ``window_stride`` (a multiple of ``replan_steps``) thins the
starts to every ``stride / replan_steps``-th query step, counted from the first policy step.

A window of episode ``e`` starting at step ``t`` covers steps ``[t, t + 50)``; the actions past the
episode's end are padding (``num_valid = min(50, length - t)`` real actions). Everything is index
arithmetic over the episode table and ``frames/step``: nothing is copied, no image is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfgrl.errors import CfgrlError
from cfgrl.store import Store

HORIZON = 50  # actions per window (PI0's action chunk)


@dataclass(frozen=True)
class EpisodeRewards:
    """What the estimators need from one store: the episode table's offsets and outcomes, and the
    prefix sums of the flat reward array (``csum[k]`` = sum of rewards of steps ``< k``)."""

    step_start: np.ndarray  # (E,) int64
    length: np.ndarray  # (E,) int64
    success: np.ndarray  # (E,) float64, 1.0 / 0.0
    csum: np.ndarray  # (num_steps + 1,) float64

    @classmethod
    def read(cls, store: Store) -> "EpisodeRewards":
        ep = store.episodes
        reward = np.asarray(store.steps("reward")[: store.num_steps], dtype=np.float64)
        return cls(
            step_start=ep.step_start.to_numpy(np.int64),
            length=ep.length.to_numpy(np.int64),
            success=ep.success.to_numpy(bool).astype(np.float64),
            csum=np.concatenate([[0.0], np.cumsum(reward)]),
        )

    def episode_return(self) -> np.ndarray:
        """R_e: the sum of the episode's rewards (its success for LIBERO's 0/1 reward)."""
        return self.csum[self.step_start + self.length] - self.csum[self.step_start]

    def reward_to_go(self, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Sum of the rewards of ``episode`` from ``step`` (within the episode) to its end."""
        end = self.step_start[episode] + self.length[episode]
        return self.csum[end] - self.csum[self.step_start[episode] + step]

    def window_reward_sum(self, episode: np.ndarray, start: np.ndarray, num_valid: np.ndarray) -> np.ndarray:
        first = self.step_start[episode] + start
        return self.csum[first + num_valid] - self.csum[first]


@dataclass(frozen=True)
class Windows:
    """The windows of one store, as parallel arrays (one entry per window)."""

    episode: np.ndarray  # int64, row in the store's episode table
    start: np.ndarray  # int32, step of obs0 within the episode
    num_valid: np.ndarray  # int16, real actions; action_is_pad = arange(HORIZON) >= num_valid
    frame: np.ndarray  # int64, global row of obs0 in frames/<cam>

    def __len__(self) -> int:
        return len(self.episode)


def resolve_stride(window_stride: int | None, replan_steps: int) -> int:
    """Steps between window starts: ``replan_steps`` (every query step) unless set."""
    if window_stride is None:
        return replan_steps
    if window_stride < 1 or window_stride % replan_steps:
        raise CfgrlError(
            f"cfgrl.window_stride={window_stride} must be a positive multiple of inference.replan_steps="
            f"{replan_steps} (windows start only at query steps), or null for every query step"
        )
    return window_stride


def make_windows(store: Store, stride: int, replan_steps: int) -> Windows:
    """One window per stored frame that lies past the wait steps, inside the episode, on the stride.

    With the default stride (= ``replan_steps``) every query frame starts a window; a larger stride
    keeps the frames whose step is a multiple of it after the first policy step.
    """
    ep = store.episodes
    frame_step = store.frame_steps().astype(np.int64)
    frame_count = ep.frame_count.to_numpy(np.int64)
    episode = np.repeat(np.arange(len(ep), dtype=np.int64), frame_count)
    frame = np.repeat(ep.frame_start.to_numpy(np.int64), frame_count)
    frame += np.arange(len(episode)) - np.repeat(np.cumsum(frame_count) - frame_count, frame_count)
    step = frame_step[frame]
    first_policy_step = ep.num_wait_steps.to_numpy(np.int64)[episode]
    length = ep.length.to_numpy(np.int64)[episode]
    keep = (step >= first_policy_step) & (step < length)
    if stride != replan_steps:
        keep &= (step - first_policy_step) % stride == 0
    episode, step, frame, length = episode[keep], step[keep], frame[keep], length[keep]
    return Windows(
        episode=episode,
        start=step.astype(np.int32),
        num_valid=np.minimum(HORIZON, length - step).astype(np.int16),
        frame=frame,
    )
