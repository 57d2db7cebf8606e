"""Planning a collection before any rollout: what the env offers, which episodes are still missing.

Everything here validates input, so a bad task id, a bad init state or an incompatible store is
reported in one line before anything is written.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass, field

import pandas as pd

from cfgrl.config import Config, EnvConfig
from cfgrl.envs import Env, TaskInfo, make_env
from cfgrl.errors import CfgrlError
from cfgrl.rollout.specs import EpisodeSpec, group_specs


@dataclass(frozen=True)
class EnvInfo:
    camera_names: tuple[str, ...]
    image_size: int
    tasks: tuple[TaskInfo, ...]
    # (task, init state) -> what the id stands for, where the id alone does not fix the scene (``Env.init_config``)
    init_configs: dict[tuple[int, int], list[float]] = field(default_factory=dict)


def _describe(env: Env) -> EnvInfo:
    tasks = tuple(env.tasks())
    configs = {(t.task_id, i): env.init_config(t.task_id, i) for t in tasks for i in range(t.num_init_states)}
    return EnvInfo(tuple(env.camera_names), env.image_size, tasks, {key: c for key, c in configs.items() if c})


def _describe_in_child(env_cfg: EnvConfig, queue) -> None:
    try:
        env = make_env(env_cfg)
        queue.put(("ok", _describe(env)))
        env.close()
    except CfgrlError as exc:
        queue.put(("error", str(exc)))


def env_info(env_cfg: EnvConfig) -> EnvInfo:
    """Cameras, image size and tasks of the configured env. A simulator with a GL context (LIBERO) is
    only ever built in a spawned process, so the main process stays free of it; the builtin env is
    pure numpy and is asked directly."""
    if env_cfg.name == "builtin":
        env = make_env(env_cfg)
        return _describe(env)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_describe_in_child, args=(env_cfg, queue), daemon=True)
    proc.start()
    try:
        status, payload = queue.get(timeout=600)
    except Exception:  # queue.Empty, or the child died before answering
        raise RuntimeError(f"could not start the {env_cfg.name} environment (exit code {proc.exitcode})") from None
    finally:
        proc.join(timeout=30)
    if status == "error":
        raise CfgrlError(payload)
    return payload


def select_tasks(env_cfg: EnvConfig, info: EnvInfo) -> tuple[list[int], list[int]]:
    """The task ids and init-state ids to collect from (``env.tasks``, ``env.init_states``)."""
    by_id = {t.task_id: t for t in info.tasks}
    tasks = list(env_cfg.tasks) if env_cfg.tasks is not None else sorted(by_id)
    unknown = [t for t in tasks if t not in by_id]
    if unknown or not tasks:
        valid = ", ".join(f"{t.task_id} ({t.prompt})" for t in info.tasks)
        raise CfgrlError(f"env.tasks {env_cfg.tasks} is not valid for {env_cfg.name}/{env_cfg.suite}; valid task ids: {valid}")
    available = min(by_id[t].num_init_states for t in tasks)
    limit = min(by_id[t].init_state_limit for t in tasks)  # drawn layouts (LIBERO) beyond the fixed ones
    inits = list(env_cfg.init_states) if env_cfg.init_states is not None else list(range(available))
    if not inits or any(not 0 <= i < limit for i in inits):
        drawn = f" and drawn layouts {available}..{limit - 1}" if limit > available else ""
        raise CfgrlError(f"env.init_states {env_cfg.init_states} is not valid; the chosen tasks have init states 0..{available - 1}{drawn}")
    return tasks, inits


def task_prompts(env_cfg: EnvConfig, info: EnvInfo) -> list[str]:
    """The prompts of the tasks ``env.tasks`` selects (every task of the suite when unset)."""
    chosen = None if env_cfg.tasks is None else set(env_cfg.tasks)
    return [t.prompt for t in info.tasks if chosen is None or t.task_id in chosen]


def groups_for_episodes(episodes: int, group_size: int) -> int:
    """``--episodes N``: whole groups only, so N is rounded up to a multiple of K."""
    if episodes < 1:
        raise CfgrlError(f"--episodes must be at least 1, got {episodes}")
    return math.ceil(episodes / group_size)


def missing_specs(specs: list[EpisodeSpec], committed: pd.DataFrame | None, run: str) -> list[EpisodeSpec]:
    """The specs whose (group, rollout) this run has not committed yet (resume without duplicates)."""
    if committed is None or committed.empty:
        return specs
    mine = committed[committed.run_id == run]
    done = set(zip(mine.group_id.astype(int), mine.rollout_index.astype(int)))
    return [s for s in specs if (s.group_id, s.rollout_index) not in done]


def plan(cfg: Config, info: EnvInfo, shard: int, num_shards: int) -> list[EpisodeSpec]:
    """Every episode of this shard's groups, in group order."""
    tasks, inits = select_tasks(cfg.env, info)
    return group_specs(tasks, inits, cfg.collect.groups, cfg.collect.group_size, cfg.collect.seed, shard, num_shards)
