"""Window advantage estimates A_w (``cfgrl.label_source``) and the group structure they use.

Groups are the store's RLOO groups (``group_id``: K rollouts of one task from one init state by one
policy at one cfg_scale). Let group g hold rollouts i = 1..K with episode returns R_i (the sum of
their rewards; the success, 0 or 1, for LIBERO), lengths T_i and success flags s_i.

- ``episode_rloo``: A_i = R_i - mean_{j != i} R_j; every window of episode i gets A_i.
- ``window_rloo``: for a window of rollout i starting at step t,
  A = G_i(t) - mean_{j != i} V_j(t), with G_i(t) the reward-to-go from t (rewards of steps t..T_i-1)
  and V_j(t) = G_j(t) if t < T_j, else s_j: a rollout that already ended sits in its terminal
  state, absorbing, and is worth its success.
- ``window_return``: the sum (``window_return_reduce=sum``) or the mean over its real actions
  (``mean``) of the rewards inside the window.
- ``none``: no estimate (NaN); every window is unconditional (plain behaviour cloning).

Edge cases: a group of one rollout has no leave-one-out baseline; its baseline is its own value, so
A = 0 (and the group counts as zero-variance). Steps are counted within the episode, wait steps
included (every rollout of a group has the same number of wait steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfgrl.errors import CfgrlError
from cfgrl.label.windows import HORIZON, EpisodeRewards, Windows

GROUP_KEYS = ("task_id", "init_state_id", "policy_id", "cfg_scale")


def default_threshold(label_source: str, window_return_reduce: str) -> float | None:
    """Each source's own threshold: 0 for the RLOO sources (better than the baseline); for
    window_return with 0/1 rewards, "the window holds the success" (0.5 for the sum, 0.5 / H for
    the mean, since a window holding the success has mean >= 1 / H)."""
    if label_source in ("episode_rloo", "window_rloo"):
        return 0.0
    if label_source == "window_return":
        return 0.5 if window_return_reduce == "sum" else 0.5 / HORIZON
    return None


def rloo_advantage(returns: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """A_i = R_i - mean_{j != i, j in group(i)} R_j (0 for a group of one)."""
    returns = np.asarray(returns, dtype=np.float64)
    codes, _ = pd.factorize(np.asarray(groups))
    size = np.bincount(codes).astype(np.float64)
    total = np.bincount(codes, weights=returns)
    others = np.maximum(size[codes] - 1.0, 1.0)
    baseline = np.where(size[codes] > 1, (total[codes] - returns) / others, returns)
    return returns - baseline


@dataclass(frozen=True)
class Groups:
    """The RLOO groups of one store: a code per episode and the members of each group."""

    code: np.ndarray  # (E,) group index of each episode
    members: np.ndarray  # (G, Kmax) episode rows, -1 where a group is smaller
    size: np.ndarray  # (G,)

    @classmethod
    def of(cls, episodes: pd.DataFrame, where: str) -> "Groups":
        code, _ = pd.factorize(episodes.group_id.to_numpy())
        mixed = episodes.groupby(code)[list(GROUP_KEYS)].nunique().max(axis=1)
        if (mixed > 1).any():
            bad = episodes.group_id.to_numpy()[np.flatnonzero(code == mixed.index[mixed.to_numpy() > 1][0])[0]]
            raise CfgrlError(
                f"{where}: group {bad} mixes rollouts of different {', '.join(GROUP_KEYS)}; an RLOO group must "
                "share all of them (was the store written by two runs with clashing group ids?)"
            )
        size = np.bincount(code)
        order = np.argsort(code, kind="stable")
        first = np.cumsum(size) - size
        position = np.arange(len(code)) - first[code[order]]
        members = np.full((len(size), int(size.max())), -1, dtype=np.int64)
        members[code[order], position] = order
        return cls(code=code, members=members, size=size)

    def zero_variance(self, rewards: EpisodeRewards) -> np.ndarray:
        """(G,) True where every rollout has the same outcome: the same success and the same return."""
        frame = pd.DataFrame({"g": self.code, "s": rewards.success, "r": rewards.episode_return()})
        by_group = frame.groupby("g")[["s", "r"]]
        spread = (by_group.max() - by_group.min()).to_numpy()
        return (spread <= 1e-9).all(axis=1)  # prefix-sum differences of equal returns may differ by rounding


def episode_rloo(windows: Windows, rewards: EpisodeRewards, groups: Groups) -> np.ndarray:
    return rloo_advantage(rewards.episode_return(), groups.code)[windows.episode]


def window_rloo(windows: Windows, rewards: EpisodeRewards, groups: Groups, block: int = 1 << 20) -> np.ndarray:
    """Reward-to-go minus the leave-one-out mean of the group's values at the same step (see module)."""
    advantage = np.empty(len(windows), dtype=np.float64)
    for lo in range(0, len(windows), block):  # blocks bound the (windows x K) gather
        episode = windows.episode[lo : lo + block]
        step = windows.start[lo : lo + block].astype(np.int64)
        own = rewards.reward_to_go(episode, step)
        members = groups.members[groups.code[episode]]  # (n, Kmax)
        present = members >= 0
        member = np.where(present, members, 0)
        running = step[:, None] < rewards.length[member]
        value = np.where(running, rewards.reward_to_go(member, np.minimum(step[:, None], rewards.length[member])),
                         rewards.success[member])
        total = np.where(present, value, 0.0).sum(axis=1)
        k = groups.size[groups.code[episode]].astype(np.float64)
        baseline = np.where(k > 1, (total - own) / np.maximum(k - 1.0, 1.0), own)
        advantage[lo : lo + block] = own - baseline
    return advantage


def window_return(windows: Windows, rewards: EpisodeRewards, reduce: str) -> np.ndarray:
    total = rewards.window_reward_sum(windows.episode, windows.start.astype(np.int64), windows.num_valid.astype(np.int64))
    return total if reduce == "sum" else total / windows.num_valid


def estimate(source: str, windows: Windows, rewards: EpisodeRewards, groups: Groups, reduce: str) -> np.ndarray:
    """A_w for every window under ``source`` (NaN for ``none``)."""
    if source == "episode_rloo":
        return episode_rloo(windows, rewards, groups)
    if source == "window_rloo":
        return window_rloo(windows, rewards, groups)
    if source == "window_return":
        return window_return(windows, rewards, reduce)
    return np.full(len(windows), np.nan)
