"""Adaptive collection (``collect.adaptive``): new groups go where the outcomes still differ.

A group whose K outcomes are all equal gives RLOO nothing to compare, so an adaptive run plans its
groups in waves from the outcomes it has already committed, per (task, init state) pair:

* a pair's history is its complete groups of this run (same run id), in group-id order;
* a pair is skipped once its last ``collect.adaptive_patience`` groups all succeeded, or all failed;
* a wave gives one more group to every pair that is not skipped and has the fewest complete groups
  (the first wave: every pair once). Within a wave, unseen pairs come first, then pairs whose last
  group was mixed, then the rest, each in grid order; the order decides only which pairs a budget
  that ends mid-wave still reaches. ``collect.groups`` is the run's total, as in a uniform run;
* a started group (some rollouts committed when a run was killed) is finished in the next wave.

A pair's new group is the grid's next group of that pair (``specs.group_grid``: pair c holds groups
c, c + P, c + 2P, ... of P pairs), so its seeds are those a uniform run gives that group, and its
episodes are interchangeable with a uniform run's. The plan is a pure function of the committed
episodes and the config: a resumed run plans the groups the uninterrupted one would have, and never
one whose episodes are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cfgrl.config import CollectConfig
from cfgrl.rollout.specs import EpisodeSpec, group_episodes, group_grid

UNSEEN, MIXED, UNDECIDED = 0, 1, 2  # a pair's priority within a wave
PRIORITY_NAMES = ("unseen", "last group mixed", "undecided")


@dataclass(frozen=True)
class PairHistory:
    """The committed groups of one (task, init state) pair in one run."""

    task_id: int
    init_state_id: int
    group_size: int
    successes: tuple[int, ...] = ()  # successes of each complete group, in group-id order
    complete: frozenset[int] = frozenset()  # their group ids
    unfinished: tuple[int, ...] = ()  # group ids with some, not all, of their K rollouts committed

    def skipped(self, patience: int) -> bool:
        """Its last ``patience`` groups all succeeded, or all failed: more of them teach nothing."""
        last = self.successes[-patience:]
        return len(last) == patience and (all(s == self.group_size for s in last) or not any(last))

    @property
    def mixed(self) -> int:
        """How many of its complete groups hold both outcomes."""
        return sum(0 < s < self.group_size for s in self.successes)

    @property
    def priority(self) -> int:
        if not self.successes:
            return UNSEEN
        return MIXED if 0 < self.successes[-1] < self.group_size else UNDECIDED

    def next_group(self, pair: int, num_pairs: int) -> int:
        """The pair's first grid group not yet complete (``pair`` is its index in the grid)."""
        group = pair
        while group in self.complete:
            group += num_pairs
        return group


def histories(episodes: pd.DataFrame, group_size: int) -> dict[tuple[int, int], PairHistory]:
    """The history of every (task, init state) pair in ``episodes`` (one run's committed episodes)."""
    groups = episodes.groupby("group_id").agg(task=("task_id", "first"), init=("init_state_id", "first"),
                                              rollouts=("success", "size"), successes=("success", "sum"))
    out = {}
    for (task, init), rows in groups.sort_index().groupby(["task", "init"]):
        whole = rows[rows.rollouts >= group_size]
        out[(int(task), int(init))] = PairHistory(
            int(task), int(init), group_size, tuple(int(s) for s in whole.successes),
            frozenset(int(g) for g in whole.index), tuple(int(g) for g in rows.index[rows.rollouts < group_size]))
    return out


@dataclass(frozen=True)
class Wave:
    """The next wave's groups, and what the line about it says."""

    specs: list[EpisodeSpec]  # every episode of its groups (a started group's committed ones included)
    by_priority: tuple[int, int, int]  # its new groups of unseen, last-mixed and undecided pairs
    unfinished: int  # started groups it finishes
    started: int  # groups of the run already started before it
    skipped: int  # pairs skipped
    num_pairs: int


def next_wave(tasks: list[int], init_states: list[int], committed: pd.DataFrame, run: str, collect: CollectConfig) -> Wave:
    """The next wave of run ``run``, from the store's ``committed`` episodes (other runs' are ignored:
    another policy's outcomes say little about this one's)."""
    k, patience = collect.group_size, collect.adaptive_patience
    num_pairs = len(tasks) * len(init_states)
    pairs = group_grid(tasks, init_states, num_pairs)  # pair c is grid group c
    known = histories(committed[committed.run_id == run], k)
    history = [known.get(pair) or PairHistory(*pair, k) for pair in pairs]
    started = sum(len(h.complete) + len(h.unfinished) for h in history)
    unfinished = [g for h in history for g in h.unfinished]
    open_pairs = [c for c, h in enumerate(history) if not h.skipped(patience) or h.unfinished]
    fresh: list[int] = []
    if open_pairs:
        # The wave is the level of the fewest whole groups: a group a kill cut short keeps its pair at
        # that level, so a resumed run finishes the interrupted wave before planning from its outcomes.
        level = min(len(history[c].complete) for c in open_pairs)
        candidates = [c for c in open_pairs if len(history[c].complete) == level and not history[c].unfinished]
        fresh = sorted(candidates, key=lambda c: (history[c].priority, c))[: max(0, collect.groups - started)]
    groups = unfinished + [history[c].next_group(c, num_pairs) for c in fresh]
    specs = [spec for g in groups for spec in group_episodes(g, *pairs[g % num_pairs], k, collect.seed)]
    by_priority = tuple(sum(history[c].priority == p for c in fresh) for p in (UNSEEN, MIXED, UNDECIDED))
    skipped = sum(h.skipped(patience) for h in history)
    return Wave(specs, by_priority, len(unfinished), started, skipped, num_pairs)
