"""Evaluation episodes on the rollout engine (`cfgrl.rollout`, shared with collect).

This module only translates: evaluation slots become the engine's ``EpisodeSpec``s, and each finished
episode is committed — to the store first (when one is given), then to the episode log — from the
engine's per-episode callback, so an interruption loses at most the episodes still running.
In a store, each (role, w, suite) is its own run id and each (task, init state) its own group, whose
rollouts are the ``episodes_per_init`` repeats: evaluation episodes can become training data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from cfgrl.config import Config, EnvConfig
from cfgrl.envs import ACTION_DIM, STATE_DIM
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import EvalEpisode
from cfgrl.policy.checkpoint import carries_stats, is_policy_config
from cfgrl.rollout.engine import episode_data, run_episodes
from cfgrl.rollout.plan import EnvInfo, task_prompts
from cfgrl.rollout.sources import load_policy, no_stats_error
from cfgrl.rollout.specs import EpisodeSpec, run_id
from cfgrl.rollout.worker import FinishedEpisode
from cfgrl.store import Store, StoreLayout, StoreWriter

POLICY_FORMATS = "a cfgrl policy (cfgrl train / cfgrl export) or a lerobot pi0 checkpoint"


def check_policy_dir(path: str | Path, what: str) -> Path:
    """Cheap up-front check that ``path`` is a policy checkpoint, before any rollout starts."""
    path = Path(path)
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        raise CfgrlError(f"{what} '{path}' is not a policy checkpoint (no {config.name} in a directory); give {POLICY_FORMATS}")
    try:
        meta = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CfgrlError(f"{what} '{path}' is not a policy checkpoint ({config} is not JSON); give {POLICY_FORMATS}") from None
    if not is_policy_config(meta):
        raise CfgrlError(f"{what} '{path}' is not a policy checkpoint (unknown config.json format); give {POLICY_FORMATS}")
    if not carries_stats(path):  # now: a baseline is loaded only after the policy's rollouts, hours later
        raise no_stats_error(what, path)
    return path


def load_checkpoint(path: Path, cfg: Config, env: EnvInfo) -> Any:
    """Load with collect's loader, which also refuses a checkpoint that cannot read this env or tell its tasks apart."""
    return load_policy(str(path), cfg, env.camera_names, env.image_size, prompts=task_prompts(cfg.env, env))


def store_layout(camera_names: tuple[str, ...], image_size: int) -> StoreLayout:
    return StoreLayout(tuple(camera_names), (image_size, image_size, 3), STATE_DIM, ACTION_DIM)


def store_run_id(episode: EvalEpisode, checkpoint: str, settings: str) -> str:
    return run_id(stage="evaluate", checkpoint=checkpoint, settings=settings, role=episode.role,
                  cfg_scale=episode.cfg_scale, suite=episode.slot.suite, split=episode.slot.split)


def group_id(run: str, task_id: int, init_state_id: int) -> int:
    """A store-wide unique group per (run, task, init state): labelling groups by ``group_id`` alone,
    so evaluation groups must never collide with collect's or another w's."""
    digest = hashlib.sha256(f"cfgrl-eval-group/{run}/{task_id}/{init_state_id}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _spec(episode: EvalEpisode, run: str) -> EpisodeSpec:
    s = episode.slot
    return EpisodeSpec(s.task_id, s.init_state_id, s.seed, group_id(run, s.task_id, s.init_state_id), s.repeat)


def recorded_in_store(path: Path, run: str) -> dict[tuple[int, int, int], bool]:
    """(group, rollout, seed) -> success of this run's episodes already committed to the store, so a
    crash between the store commit and the log commit is healed without a duplicate episode."""
    if not path.exists():
        return {}
    episodes = Store(path).episodes
    mine = episodes[episodes.run_id == run]
    return {(int(r.group_id), int(r.rollout_index), int(r.seed)): bool(r.success) for r in mine.itertuples()}


def heal_from_store(batch: list[EvalEpisode], path: Path, run: str, commit: Callable[[EvalEpisode, bool, int], None]) -> list[EvalEpisode]:
    """Log the episodes of ``batch`` already in the store (length unknown: -1); return the others."""
    recorded = recorded_in_store(path, run)
    rest = []
    for episode in batch:
        spec = _spec(episode, run)
        found = recorded.get((spec.group_id, spec.rollout_index, spec.seed))
        if found is None:
            rest.append(episode)
        else:
            commit(episode, found, -1)
    return rest


def roll_out(
    cfg: Config,
    env_cfg: EnvConfig,
    policy: Any,
    cfg_scale: float,
    batch: list[EvalEpisode],
    run: str,
    commit: Callable[[EvalEpisode, bool, int], None],
    store: StoreWriter | None,
    video_dir: Path | None,
    progress: bool,
) -> None:
    """Run ``batch`` (one policy, one w, one suite, all of run ``run``) and ``commit`` every finished
    episode, after appending it to ``store`` (its writer, commit_seconds=0) when one is given."""
    by_spec = {_spec(episode, run): episode for episode in batch}

    def on_episode(spec: EpisodeSpec, finished: FinishedEpisode) -> None:
        episode = by_spec[spec]
        if store is not None:
            store.append(episode_data(env_cfg, spec, finished, policy.policy_id, episode.cfg_scale, run))  # commit_seconds=0: commits
        commit(episode, finished.success, len(finished.action) - finished.num_wait_steps)

    run_episodes(
        env_cfg, policy, list(by_spec), cfg_scale, workers=cfg.collect.workers, envs_per_worker=cfg.collect.envs_per_worker,
        progress=progress, replan_steps=cfg.inference.replan_steps, num_steps=cfg.inference.num_steps, on_episode=on_episode,
        videos=cfg.evaluate.videos if video_dir is not None else 0, video_dir=video_dir,
    )
