"""Window advantage estimates A_w (``cfgrl.label_source``) and the RLOO groups they use.

Groups are the store's RLOO groups (``group_id``: K rollouts of one task from one init state by one
policy at one cfg_scale). Let group g hold rollouts i = 1..K with episode returns R_i (the sum of
their rewards; the success, 0 or 1, for LIBERO), lengths T_i and success flags s_i.

- ``episode_rloo``: A_i = R_i - mean_{j != i} R_j; every window of episode i gets A_i.
- ``window_rloo``: for a window of rollout i starting at step t,
  A = G_i(t) - mean_{j != i} V_j(t), with G_i(t) the reward-to-go from t (rewards of steps t..T_i-1)
  and V_j(t) = G_j(t) if t < T_j, else s_j: a rollout that already ended sits in its terminal
  state, absorbing, and is worth its success.
- ``window_return``: the sum (``window_return_reduce=sum``) or the mean over its real actions
  (``mean``) of the rewards inside the window (steps t .. t + num_valid - 1).
- ``value``: RECAP's N-step advantage from a value model's V of every stored frame (`cfgrl value`):
  A = clip(sum_{k < N} r_{t+k} / L + V(o_{t+N}), -1, 0) - V(o_t), with the value's rewards and
  normalisation (cfgrl.value.targets), N = ``cfgrl.value_horizon``; V(o_{t+N}) = 0 once the episode
  ended (nothing is left to earn), and the clip is the one the value's targets had.
- ``none``: no estimate (NaN); every window is unconditional (plain behaviour cloning).

Edge cases: a group of one rollout has no leave-one-out baseline; its baseline is its own value, so
A = 0, and the group-relative sources (``GROUP_RELATIVE``) treat it as a zero-variance group (a store
of such groups only is refused for them: cfgrl.label.build). Steps are counted within the episode, wait steps
included (every rollout of a group has the same number of wait steps). Groups never span stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfgrl.errors import CfgrlError
from cfgrl.label.windows import DEFAULT_HORIZON, StoreData, Windows
from cfgrl.store import episode_frames
from cfgrl.value.targets import Returns

GROUP_KEYS = ("task_id", "init_state_id", "policy_id", "cfg_scale")
GROUP_RELATIVE = ("episode_rloo", "window_rloo")  # the sources whose estimate needs a leave-one-out baseline
RECAP_QUANTILE = 0.7  # value's default threshold: the top 30% of each task's windows positive, as RECAP labels


@dataclass(frozen=True)
class StoreValues:
    """What ``value`` reads for one store: V of every stored frame and the store's RECAP returns."""

    frame_value: np.ndarray  # (M,) V(o) by row of frames/*
    returns: Returns


def default_threshold(label_source: str, window_return_reduce: str, horizon: int = DEFAULT_HORIZON) -> float | None:
    """Each source's own threshold: 0 for the RLOO sources (at least as good as the baseline); for
    window_return with 0/1 rewards, "the window holds the success" (0.5 for the sum; 0.5 / H for
    the mean, since a window holding the success has mean >= 1 / H)."""
    if label_source in GROUP_RELATIVE:
        return 0.0
    if label_source == "window_return":
        return 0.5 if window_return_reduce == "sum" else 0.5 / horizon
    return None


def leave_one_out_baseline(own: np.ndarray, group_total: np.ndarray, group_size: np.ndarray) -> np.ndarray:
    """mean_{j != i} of the group's values: (sum - own) / (K - 1); ``own`` for a group of one."""
    k = group_size.astype(np.float64)
    return np.where(k > 1, (group_total - own) / np.maximum(k - 1.0, 1.0), own)


def rloo_advantage(returns: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """A_i = R_i - mean_{j != i, j in group(i)} R_j (0 for a group of one)."""
    returns = np.asarray(returns, dtype=np.float64)
    code, _ = pd.factorize(np.asarray(groups))
    size, total = np.bincount(code), np.bincount(code, weights=returns)
    return returns - leave_one_out_baseline(returns, total[code], size[code])


@dataclass(frozen=True)
class Groups:
    """The RLOO groups of one store: a dense code per episode and the size of each group."""

    code: np.ndarray  # (E,)
    size: np.ndarray  # (G,)

    @classmethod
    def of(cls, data: StoreData) -> "Groups":
        episodes = data.episodes
        # Group ids are unique within one collection run; a store may hold several runs.
        code, _ = pd.factorize(pd.MultiIndex.from_arrays([episodes.run_id, episodes.group_id]))
        distinct = episodes.groupby(code)[list(GROUP_KEYS)].nunique().max(axis=1).to_numpy()
        if (distinct > 1).any():
            bad = episodes.group_id.to_numpy()[np.argmax(distinct[code] > 1)]
            raise CfgrlError(
                f"store '{data.path}': group {bad} mixes rollouts of different {', '.join(GROUP_KEYS)}; an RLOO "
                "group must share all of them"
            )
        return cls(code=code, size=np.bincount(code))

    def zero_variance(self, data: StoreData) -> np.ndarray:
        """(G,) True where every rollout has the same outcome: the same success and the same return."""
        spread = np.zeros(len(self.size), dtype=bool)
        for outcome in (data.success(), data.episode_return()):
            high = np.full(len(self.size), -np.inf)
            low = np.full(len(self.size), np.inf)
            np.maximum.at(high, self.code, outcome)
            np.minimum.at(low, self.code, outcome)
            spread |= high - low > 1e-9  # prefix-sum differences of equal returns may differ by rounding
        return ~spread

    def all_succeeded(self, data: StoreData) -> np.ndarray:
        return np.bincount(self.code, weights=data.success()) == self.size


def episode_rloo(windows: Windows, data: StoreData, groups: Groups) -> np.ndarray:
    return rloo_advantage(data.episode_return(), groups.code)[windows.episode]


def group_value_sums(windows: Windows, data: StoreData, groups: Groups) -> np.ndarray:
    """sum_{j in group} V_j(t) for each window's group and start step t, in O(steps + windows).

    Rewards of all rollouts of a group are summed per step index k (R_g[k]) and the successes of
    the rollouts that end at k are summed too (E_g[k]); then
    sum_j V_j(t) = sum_{k >= t} R_g[k] (the running rollouts' reward-to-go; an ended one has no
    reward left) + sum_{k <= t} E_g[k] (the ended rollouts, worth their success).
    """
    length, step_start = data.column("length"), data.column("step_start")
    span = np.zeros(len(groups.size), dtype=np.int64)
    np.maximum.at(span, groups.code, length + 1)  # step indices 0 .. T_max of the group
    offset = np.cumsum(span) - span  # each group's slice of the flat per-(group, step) buckets
    first_step_row = np.cumsum(length) - length
    # bucket of each stored step: its group's offset + its step index within the episode
    step_bucket = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(offset[groups.code] - first_step_row, length)
    flat_step = np.arange(int(length.sum()), dtype=np.int64) + np.repeat(step_start - first_step_row, length)
    rewards = np.bincount(step_bucket, weights=data.reward[flat_step], minlength=int(span.sum()))
    ended = np.bincount(offset[groups.code] + length, weights=data.success(), minlength=int(span.sum()))
    rewards_before = np.concatenate([[0.0], np.cumsum(rewards)])
    ended_before = np.concatenate([[0.0], np.cumsum(ended)])
    g = groups.code[windows.episode]
    bucket = offset[g] + windows.start
    running = rewards_before[offset[g] + span[g]] - rewards_before[bucket]
    absorbed = ended_before[bucket + 1] - ended_before[offset[g]]
    return running + absorbed


def window_rloo(windows: Windows, data: StoreData, groups: Groups) -> np.ndarray:
    """A = G_i(t) - mean_{j != i} V_j(t) (see the module docstring)."""
    own = data.reward_to_go(windows.episode, windows.start)
    total = group_value_sums(windows, data, groups)
    return own - leave_one_out_baseline(own, total, groups.size[groups.code[windows.episode]])


def window_return(windows: Windows, data: StoreData, reduce: str) -> np.ndarray:
    total = data.window_reward_sum(windows.episode, windows.start, windows.num_valid)
    return total if reduce == "sum" else total / windows.num_valid


def frame_at(data: StoreData, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The row in frames/* of ``episode``'s stored frame at ``step`` (one line when there is none)."""
    owner, rows = episode_frames(data.column("frame_start"), data.column("frame_count"))
    span = int(data.column("length").max()) + 1  # every frame's step is below its episode's length
    key = owner * span + data.frame_step[rows]
    order = np.argsort(key, kind="stable")
    want = episode * span + step
    pos = np.minimum(np.searchsorted(key[order], want), len(order) - 1)
    found = key[order][pos] == want
    if not found.all():
        bad = int(np.argmin(found))
        raise CfgrlError(f"store '{data.path}': episode {episode[bad]} has no stored frame at step {step[bad]}, where the "
                         "N-step advantage needs V; make cfgrl.value_horizon a multiple of inference.replan_steps")
    return rows[order[pos]]


def value_advantage(windows: Windows, data: StoreData, values: StoreValues, horizon: int) -> np.ndarray:
    """A = clip(sum_{k < N} r_{t+k} / L + V(o_{t+N}), -1, 0) - V(o_t) (see the module docstring)."""
    reward, running = values.returns.n_step(windows.episode, windows.start, horizon)
    later = np.zeros(len(windows))
    later[running] = values.frame_value[frame_at(data, windows.episode[running], windows.start[running] + horizon)]
    return np.clip(reward + later, -1.0, 0.0) - values.frame_value[windows.frame]


def per_task_thresholds(advantage: np.ndarray, task: np.ndarray, quantile: float) -> dict[int, float]:
    """The ``quantile`` of the (finite) advantages of each task's windows."""
    thresholds = {}
    for t in np.unique(task):
        mine = advantage[(task == t) & ~np.isnan(advantage)]
        thresholds[int(t)] = float(np.quantile(mine, quantile)) if len(mine) else float("nan")
    return thresholds


def estimate(source: str, windows: Windows, data: StoreData, groups: Groups, reduce: str | None) -> np.ndarray:
    """A_w for every window under a source that reads the store only (NaN for ``none``; ``value``: value_advantage)."""
    if source == "episode_rloo":
        return episode_rloo(windows, data, groups)
    if source == "window_rloo":
        return window_rloo(windows, data, groups)
    if source == "window_return":
        return window_return(windows, data, reduce or "sum")
    return np.full(len(windows), np.nan)
