"""RECAP's rewards and value targets (π*0.6, Physical Intelligence 2025), from a store's episode table.

For an episode of length T (steps 0 .. T-1, its first ``num_wait_steps`` LIBERO's settle steps) of a task
whose maximum length is L policy steps:

- r_t = -1 at every policy step, except the last one: 0 if the episode succeeded (the collector ends
  an episode at its success step), -failure_penalty * L if it failed; r_t = 0 at a wait step (not the
  policy's action; no window starts there);
- the value target of step t is the return-to-go normalised by L and clipped:
  y_t = clip(sum_{k >= t} r_k / L, -1, 0).

So a success k policy steps ahead is worth -(k - 1) / L, and with the default failure_penalty 1 every
state of a failed episode is worth -1. ``failure_penalty`` is in units of L so that one default fits
tasks of any length.

The environment's own reward is read only to check that each successful episode ends on a success
reward: a store without rewards cannot say where its successes happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfgrl.errors import CfgrlError


def _step_positions(episodes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every step of every episode: its episode row, its flat row in steps/*, its index in the episode."""
    length = episodes["length"].to_numpy(np.int64)
    episode = np.repeat(np.arange(len(length)), length)
    within = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return episode, episodes["step_start"].to_numpy(np.int64)[episode] + within, within


def recap_rewards(path: str, episodes: pd.DataFrame, env_reward: np.ndarray, max_length: np.ndarray,
                  failure_penalty: float) -> np.ndarray:
    """RECAP's reward of every stored step (flat, like ``steps/reward``); ``max_length``: L per episode."""
    length = episodes["length"].to_numpy(np.int64)
    wait = episodes["num_wait_steps"].to_numpy(np.int64)
    success = episodes["success"].to_numpy(bool)
    too_long = np.flatnonzero(length - wait > max_length)
    if len(too_long):
        e = int(too_long[0])
        raise CfgrlError(f"store '{path}': episode {e} has {length[e] - wait[e]} policy steps, more than the task's maximum "
                         f"length L={max_length[e]}; set env.max_steps to the limit the store was collected with")
    last = episodes["step_start"].to_numpy(np.int64) + length - 1
    unrewarded = np.flatnonzero(success & ~(env_reward[last] > 0))
    if len(unrewarded):
        e = int(unrewarded[0])
        raise CfgrlError(f"store '{path}': episode {e} is marked successful but its last step has reward {env_reward[last[e]]:g}, "
                         "not a success reward; the value model needs stores whose rewards mark the success step "
                         "(written by `cfgrl collect`)")
    episode, flat, within = _step_positions(episodes)
    reward = np.zeros(len(env_reward), np.float64)
    reward[flat] = np.where(within >= wait[episode], -1.0, 0.0)
    reward[last] = np.where(success, 0.0, -failure_penalty * max_length)
    return reward


@dataclass(frozen=True)
class Returns:
    """One store's RECAP rewards as prefix sums (``csum[k]``: the sum over flat steps ``< k``), with L per episode."""

    episodes: pd.DataFrame
    csum: np.ndarray  # (N + 1,)
    max_length: np.ndarray  # (E,) L of each episode's task

    @classmethod
    def of(cls, path: str, episodes: pd.DataFrame, env_reward: np.ndarray, max_length: Mapping[str, int],
           failure_penalty: float) -> "Returns":
        """A store's returns, L looked up by each episode's suite in ``max_length`` (suite -> L)."""
        per_episode = episodes["suite"].map(max_length).to_numpy(np.float64)
        reward = recap_rewards(path, episodes, np.asarray(env_reward, np.float64), per_episode, failure_penalty)
        return cls(episodes, np.concatenate([[0.0], np.cumsum(reward)]), per_episode)

    def _sum(self, episode: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
        start = self.episodes["step_start"].to_numpy(np.int64)[episode]
        return self.csum[start + stop] - self.csum[start + first]

    def target(self, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
        """y_t = clip(return-to-go from ``step`` / L, -1, 0): the value target."""
        end = self.episodes["length"].to_numpy(np.int64)[episode]
        return np.clip(self._sum(episode, step, end) / self.max_length[episode], -1.0, 0.0)

    def n_step(self, episode: np.ndarray, step: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum_{k < n} r_{step+k} / L, whether the episode is still running at ``step + n``)."""
        end = self.episodes["length"].to_numpy(np.int64)[episode]
        stop = np.minimum(step + n, end)
        return self._sum(episode, step, stop) / self.max_length[episode], step + n < end
