"""The collect stage as a function: what `cfgrl collect` runs, and what `cfgrl round` calls."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from cfgrl.config import Config


def collect(cfg: Config, store: Path, policy: str | None, shard: int = 0, num_shards: int = 1) -> None:
    """Collect this shard's missing episodes of ``cfg``'s group grid into ``store`` (resumable)."""
    from cfgrl.envs import ACTION_DIM, STATE_DIM
    from cfgrl.rollout.engine import episode_data, run_episodes
    from cfgrl.rollout.plan import env_info, missing_specs, plan
    from cfgrl.rollout.sources import load_policy
    from cfgrl.rollout.specs import run_id
    from cfgrl.rollout.videos import require_video_support
    from cfgrl.store import Store, StoreLayout, StoreWriter, writer_lock

    info = env_info(cfg.env)
    specs = plan(cfg, info, shard, num_shards)
    layout = StoreLayout(info.camera_names, (info.image_size, info.image_size, 3), STATE_DIM, ACTION_DIM)
    if store.exists():  # another writer, layout or schema fails here, before the policy loads
        writer_lock(store).release()
        Store(store).require_layout(layout)
    if cfg.collect.videos > 0:
        require_video_support()
    actor = load_policy(policy, cfg, info.camera_names, info.image_size, say=typer.echo)
    run = run_id(stage="collect", env=asdict(cfg.env), policy_id=actor.policy_id, cfg_scale=cfg.inference.cfg_scale,
                 num_steps=cfg.inference.num_steps, replan_steps=cfg.inference.replan_steps, seed=cfg.collect.seed,
                 group_size=cfg.collect.group_size)
    with StoreWriter(store, layout) as writer:  # the store's one writer from here on: what is committed stays so
        todo = missing_specs(specs, Store(store).episodes, run)
        k = cfg.collect.group_size
        typer.echo(f"{store}: shard {shard}/{num_shards} of {cfg.collect.groups} groups x K={k}: {len(specs)} episodes, "
                   f"{len(specs) - len(todo)} already committed, {len(todo)} to collect "
                   f"(policy {actor.policy_id}, cfg_scale {cfg.inference.cfg_scale}, run {run})")
        if not todo:
            return

        def append(spec, episode) -> None:
            writer.append(episode_data(cfg.env, spec, episode, actor.policy_id, cfg.inference.cfg_scale, run))

        results = run_episodes(
            cfg.env, actor, todo, cfg.inference.cfg_scale, workers=cfg.collect.workers, progress=True,
            replan_steps=cfg.inference.replan_steps, num_steps=cfg.inference.num_steps, on_episode=append,
            on_end=writer.flush, videos=cfg.collect.videos, video_dir=store.parent / f"{store.name}.videos",
        )
    wins = sum(r.success for r in results)
    total = Store(store).num_episodes
    typer.echo(f"collected {len(results)} episodes, success {wins}/{len(results)} ({wins / len(results):.0%}); "
               f"'{store}' now holds {total} episodes")
