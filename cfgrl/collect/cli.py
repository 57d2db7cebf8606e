"""`cfgrl collect` (roll out a policy into a Zarr store, resumable) and `cfgrl inspect` (summarise one).

    cfgrl collect data/builtin/reach.zarr --policy scripted:0.3 --episodes 64 -o collect.group_size=8
    cfgrl collect data/libero/spatial.zarr --policy ckpt/ -o env.name=libero -o env.suite=libero_spatial
    cfgrl inspect data/builtin/reach.zarr
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve
from cfgrl.config import Config
from cfgrl.errors import CfgrlError

PolicyOption = Annotated[
    Optional[str],
    typer.Option("--policy", help="Checkpoint DIR, scripted:NOISE (the builtin env's expert, NOISE in [0, 1]), "
                 "or nothing for a fresh random policy.preset (runs, learns nothing)."),
]


def collect_command(
    store: Annotated[Path, typer.Argument(help="Zarr store to create or extend; re-running the same command resumes it.")],
    policy: PolicyOption = None,
    episodes: Annotated[Optional[int], typer.Option("--episodes", help="Episodes to collect, rounded up to whole groups of K (sets collect.groups).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Environment worker processes (sets collect.workers).")] = None,
    shard: Annotated[int, typer.Option("--shard", help="Which shard of the group grid to collect (0-based).")] = 0,
    num_shards: Annotated[int, typer.Option("--num-shards", help="Split the group grid into this many shards of whole groups.")] = 1,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Roll out a policy and append whole episodes, in groups of K per (task, init state), to a Zarr store."""
    from cfgrl.collect.plan import groups_for_episodes

    cfg = resolve(config, overrides, *([f"collect.workers={workers}"] if workers is not None else []))
    if cfg.collect.workers is not None and cfg.collect.workers < 1:
        raise CfgrlError(f"collect.workers must be at least 1 (or null = fits the machine), got {cfg.collect.workers}")
    if episodes is not None:
        cfg.collect.groups = groups_for_episodes(episodes, cfg.collect.group_size)
    collect(cfg, store, policy, shard, num_shards)


def collect(cfg: Config, store: Path, policy: str | None, shard: int = 0, num_shards: int = 1) -> None:
    """Collect this shard's missing episodes of ``cfg``'s group grid into ``store`` (resumable)."""
    from cfgrl.collect.engine import episode_data, run_episodes
    from cfgrl.collect.plan import env_info, missing_specs, plan
    from cfgrl.collect.sources import load_policy
    from cfgrl.collect.specs import run_id
    from cfgrl.collect.videos import require_video_support
    from cfgrl.envs import ACTION_DIM, STATE_DIM
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


def inspect_command(
    store: Annotated[Path, typer.Argument(help="A store written by `cfgrl collect`, or a directory of `cfgrl round` rounds.")],
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Summarise a store (episodes, steps, success per task, size, schema, policy ids) or the lineage of rounds."""
    from cfgrl.store import Store

    resolve(config, overrides)  # same options as every command; a bad override is still reported
    if store.is_dir() and not (store / "zarr.json").exists() and any(store.glob("round_*")):
        from cfgrl.pipeline.rounds import lineage

        typer.echo(lineage(store))
        return
    s = Store(store)
    ep = s.episodes
    h, w, _ = s.layout.image_shape
    lines = [
        f"store: {s.path}",
        f"schema: {s.attrs['schema']} version {s.attrs['schema_version']}",
        f"size on disk: {s.size_bytes() / 2**20:.1f} MiB",
        f"episodes: {len(ep)}   steps: {s.num_steps} (wait steps {int(ep.num_wait_steps.sum()) if len(ep) else 0})   "
        f"frames: {s.num_frames} per camera   cameras: {', '.join(s.layout.camera_names)} ({h}x{w})",
    ]
    if len(ep):
        lines.append(f"success: {int(ep.success.sum())}/{len(ep)} ({ep.success.mean():.1%})")
        lines.append("per task:")
        by_task = ep.groupby(["env", "suite", "task_id", "prompt"]).success.agg(["count", "sum", "mean"])
        for (env, suite, task, prompt), row in by_task.iterrows():
            lines.append(f"  {env}/{suite} task {task:<3} {prompt!r:<40} {int(row['count']):>6} episodes  success {row['mean']:.1%}")
        lines.append("policies:")
        by_policy = ep.groupby(["policy_id", "cfg_scale"]).agg(
            episodes=("success", "count"), success=("success", "mean"), runs=("run_id", "nunique"),
            groups=("group_id", "nunique"), renderer=("renderer", "first"))
        for (pid, w_), row in by_policy.iterrows():
            lines.append(f"  {pid}  cfg_scale {w_:g}: {row.episodes} episodes in {row.groups} groups, "
                         f"success {row.success:.1%}, {row.runs} run(s), renderer {row.renderer}")
    typer.echo("\n".join(lines))
