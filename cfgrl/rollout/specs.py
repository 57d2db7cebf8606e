"""Which episodes a collection runs: the deterministic group grid, per-episode seeds (``seeds``), shards.

A group is K rollouts (RLOO's group) from one (task, init state), all with one policy and one
cfg_scale. Group ``g`` of a run always maps to the same (task, init state) and its rollouts always
get the same seeds, whatever the shard, the worker count or how often the run was resumed, so a
re-run can skip exactly the (group, rollout) pairs already committed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cfgrl.errors import CfgrlError
from cfgrl.rollout.seeds import SCHEME, episode_seed


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to roll out; ``cfgrl evaluate`` builds these too (same init states and seeds for every w)."""

    task_id: int
    init_state_id: int
    seed: int
    group_id: int
    rollout_index: int


def group_grid(tasks: list[int], init_states: list[int], num_groups: int) -> list[tuple[int, int]]:
    """(task, init state) of groups 0..num_groups-1.

    Tasks cycle fastest, so any prefix is balanced across tasks. Each task walks the init states from
    its own starting point, spread evenly over the list, so a prefix also spreads over init states:
    32 groups of 4 tasks visit 32 init states, not 8 (on the built-in env, where one init state is one
    scene for every task, that is 32 scenes to learn from, not 8). Every (task, init state) comes once
    per pass; past a pass the grid repeats (new group ids, so new seeds)."""
    if not tasks or not init_states:
        raise CfgrlError("no task or no init state selected; check env.tasks and env.init_states")
    num_tasks, num_inits = len(tasks), len(init_states)
    spacing = num_inits // num_tasks
    grid = []
    for g in range(num_groups):
        cell = g % (num_tasks * num_inits)
        task, step = cell % num_tasks, cell // num_tasks
        grid.append((tasks[task], init_states[(step + task * spacing) % num_inits]))
    return grid


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise CfgrlError(f"--shard {shard} --num-shards {num_shards} is not valid; need 0 <= shard < num_shards")


def shard_groups(num_groups: int, shard: int, num_shards: int) -> list[int]:
    """The group ids of one shard: whole groups, round-robin, so shards are balanced across tasks."""
    check_shard(shard, num_shards)
    return [g for g in range(num_groups) if g % num_shards == shard]


def group_specs(
    tasks: list[int], init_states: list[int], num_groups: int, group_size: int, base_seed: int,
    shard: int = 0, num_shards: int = 1,
) -> list[EpisodeSpec]:
    """Every episode of this shard's groups, group by group."""
    grid = group_grid(tasks, init_states, num_groups)
    return [spec for g in shard_groups(num_groups, shard, num_shards) for spec in group_episodes(g, *grid[g], group_size, base_seed)]


def group_episodes(group_id: int, task: int, init_state: int, group_size: int, base_seed: int) -> list[EpisodeSpec]:
    """The K episodes of group ``group_id`` of the grid, which is pair (``task``, ``init_state``)."""
    return [EpisodeSpec(task, init_state, episode_seed("collect", base_seed, group_id, k), group_id, k) for k in range(group_size)]


def run_id(**identity: object) -> str:
    """Short stable hash of everything that makes two collections' episodes interchangeable
    (env, tasks, policy, cfg_scale, seeds and their derivation ``seeds.SCHEME``, K, ...), never of
    counts, shards or worker numbers."""
    text = json.dumps({**identity, "seeds": SCHEME}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
