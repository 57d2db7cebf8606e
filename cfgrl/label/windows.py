"""Windows: H action steps (the policy's chunk: 50 for PI0) starting at a step that has a stored observation.

The policy sees images only at its query steps (every ``replan_steps`` policy steps after
LIBERO's wait steps), and the store keeps frames only there, so a window's first observation
``obs0`` is always a stored frame. ``window_stride`` (a multiple of ``replan_steps``) thins the
starts to the query steps whose distance from the first policy step is a multiple of it. Windows
come in a canonical order (run, group, rollout, start), whatever order the episodes were stored in.

A window of episode ``e`` starting at step ``t`` covers steps ``[t, t + H)``; the actions past the
episode's end are padding (``num_valid = min(H, length - t)`` real actions). H is the chunk size of
the policy that will train on the windows (``cfgrl label`` reads it from the policy), recorded in the
label index as ``horizon``; training refuses an index whose H differs from its policy's chunk. Everything is index
arithmetic over the episode table and ``frames/step``: nothing is copied, no image is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfgrl.errors import CfgrlError
from cfgrl.store import Store, episode_frames

DEFAULT_HORIZON = 50  # actions per window when no policy says otherwise (PI0's action chunk)


@dataclass(frozen=True)
class StoreData:
    """All that labelling reads from one store: the episode table, the step of every frame and the
    rewards (as prefix sums: ``csum[k]`` = sum of the rewards of flat steps ``< k``). Never an image."""

    path: str
    episodes: pd.DataFrame
    frame_step: np.ndarray  # (M,) int64
    reward: np.ndarray  # (N,) float64
    csum: np.ndarray  # (N + 1,) float64

    @classmethod
    def read(cls, store: Store) -> "StoreData":
        if store.num_episodes == 0:
            raise CfgrlError(f"store '{store.path}' has no finished episode yet")
        reward = store.read_steps("reward").astype(np.float64)
        return cls(
            path=str(store.path),
            episodes=store.episodes,
            frame_step=store.frame_steps().astype(np.int64),
            reward=reward,
            csum=np.concatenate([[0.0], np.cumsum(reward)]),
        )

    def column(self, name: str, dtype: str = "int64") -> np.ndarray:
        return self.episodes[name].to_numpy(dtype)

    def success(self) -> np.ndarray:
        return self.column("success", "bool").astype(np.float64)

    def episode_return(self) -> np.ndarray:
        """R_e: the sum of the episode's rewards (its success for LIBERO's 0/1 reward)."""
        start = self.column("step_start")
        return self.csum[start + self.column("length")] - self.csum[start]

    def reward_to_go(self, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
        """G_e(t): the sum of the rewards of ``episode`` from ``step`` (within the episode) to its end."""
        start = self.column("step_start")[episode]
        return self.csum[start + self.column("length")[episode]] - self.csum[start + step]

    def window_reward_sum(self, episode: np.ndarray, step: np.ndarray, num_valid: np.ndarray) -> np.ndarray:
        first = self.column("step_start")[episode] + step
        return self.csum[first + num_valid] - self.csum[first]


@dataclass(frozen=True)
class Windows:
    """The windows of one store, as parallel arrays (one entry per window)."""

    episode: np.ndarray  # int64, row in the store's episode table
    start: np.ndarray  # int64, step of obs0 within the episode
    num_valid: np.ndarray  # int64, real actions; action_is_pad = arange(H) >= num_valid
    frame: np.ndarray  # int64, global row of obs0 in frames/<cam>

    def __len__(self) -> int:
        return len(self.episode)

    def take(self, keep: np.ndarray) -> "Windows":
        return Windows(self.episode[keep], self.start[keep], self.num_valid[keep], self.frame[keep])


def collected_replan(stores: list[Store], given: int | None, default: int) -> int:
    """The ``inference.replan_steps`` the stores were collected with (``Store.replan_steps``), which windows
    must follow: a window starts at a stored frame. ``given``: the value the user set, refused where it
    contradicts the stores; ``default``: the value where no episode has two query steps to tell it."""
    found = {store.path: store.replan_steps() for store in stores}
    values = sorted({v for vs in found.values() for v in vs})
    if len(values) > 1:
        where = "; ".join(f"'{path}': {', '.join(map(str, vs))}" for path, vs in found.items() if vs)
        raise CfgrlError(f"the stores hold episodes collected with different inference.replan_steps ({where}); windows "
                         "start at the query steps of one setting: label the stores of each setting apart")
    if values and given is not None and given != values[0]:
        raise CfgrlError(f"inference.replan_steps={given} contradicts the stores, collected with replan_steps={values[0]} "
                         "(their frames, stored at query steps only, are that far apart); drop the override, or give "
                         f"{values[0]}")
    return values[0] if values else (default if given is None else given)


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


def make_windows(data: StoreData, stride: int, replan_steps: int, horizon: int = DEFAULT_HORIZON) -> Windows:
    """One window per stored frame that lies past the wait steps, inside the episode, on the stride."""
    episode, frame = episode_frames(data.column("frame_start"), data.column("frame_count"))
    step = data.frame_step[frame]
    first_policy_step = data.column("num_wait_steps")[episode]
    length = data.column("length")[episode]
    keep = (step >= first_policy_step) & (step < length)  # never inside the wait, never past the end
    if stride != replan_steps:
        keep &= (step - first_policy_step) % stride == 0
    windows = Windows(episode, step, np.minimum(horizon, length - step), frame).take(keep)
    return windows.take(canonical_order(data, windows))


def canonical_order(data: StoreData, windows: Windows) -> np.ndarray:
    """The order of the windows by (run, group, rollout, start) instead of the store's row order.

    Parallel collectors commit episodes in the order they finish, so two collections of the same
    episodes store them in different orders; the condition-dropout draws (one per table row) and the
    trainer's batches (shuffled table rows) would then differ, and so would the trained policy.
    """
    _, run = np.unique(data.episodes["run_id"].to_numpy(str), return_inverse=True)
    episode = windows.episode
    return np.lexsort((windows.start, data.column("rollout_index")[episode], data.column("group_id")[episode], run[episode]))
