"""The collect stage as a function: what `cfgrl collect` runs, and what `cfgrl round` calls."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import typer

from cfgrl.config import Config
from cfgrl.errors import CfgrlError


def collect(cfg: Config, store: Path, policy: str | None, shard: int = 0, num_shards: int = 1) -> None:
    """Collect this shard's missing episodes of ``cfg``'s group grid into ``store`` (resumable); with
    ``collect.adaptive``, the run's groups in waves planned from the store (``rollout.waves``)."""
    from cfgrl.envs import ACTION_DIM, STATE_DIM
    from cfgrl.rollout.engine import episode_data, run_episodes
    from cfgrl.rollout.plan import env_info, missing_specs, plan, select_tasks, task_prompts
    from cfgrl.rollout.sources import load_policy
    from cfgrl.rollout.specs import check_shard, run_id
    from cfgrl.rollout.videos import require_video_support
    from cfgrl.store import Store, StoreLayout, StoreWriter, writer_lock

    if cfg.collect.adaptive:
        check_shard(shard, num_shards)
        if num_shards > 1:
            raise CfgrlError(f"--num-shards {num_shards} does not go with collect.adaptive: each wave is planned from the "
                             "outcomes of every earlier group in one store, which shards writing their own stores cannot "
                             "see; collect adaptively in one run, or shard with collect.adaptive=false")
    info = env_info(cfg.env)
    if cfg.collect.adaptive:  # planned wave by wave; the selection is checked now, before anything is written
        tasks, inits = select_tasks(cfg.env, info)
    else:
        specs = plan(cfg, info, shard, num_shards)
    layout = StoreLayout(info.camera_names, (info.image_size, info.image_size, 3), STATE_DIM, ACTION_DIM)
    if store.exists():  # another writer, layout or schema fails here, before the policy loads
        writer_lock(store).release()
        existing = Store(store)
        existing.require_layout(layout)
        existing.require_replan_steps(cfg.inference.replan_steps)
    if cfg.collect.videos > 0:
        require_video_support()
    actor = load_policy(policy, cfg, info.camera_names, info.image_size, say=typer.echo, prompts=task_prompts(cfg.env, info))
    run = run_id(stage="collect", env=asdict(cfg.env), policy_id=actor.policy_id, cfg_scale=cfg.inference.cfg_scale,
                 num_steps=cfg.inference.num_steps, replan_steps=cfg.inference.replan_steps, seed=cfg.collect.seed,
                 group_size=cfg.collect.group_size)
    about = f"policy {actor.policy_id}, cfg_scale {cfg.inference.cfg_scale}, run {run}"
    with StoreWriter(store, layout, cfg.collect.commit_seconds) as writer:  # the store's one writer from here on: what is committed stays so

        def rollout(todo: list, videos: int) -> list:
            def append(spec, episode) -> None:
                writer.append(episode_data(cfg.env, spec, episode, actor.policy_id, cfg.inference.cfg_scale, run))

            return run_episodes(
                cfg.env, actor, todo, cfg.inference.cfg_scale, workers=cfg.collect.workers, envs_per_worker=cfg.collect.envs_per_worker,
                progress=True, replan_steps=cfg.inference.replan_steps, num_steps=cfg.inference.num_steps, on_episode=append,
                on_end=writer.flush, videos=videos, video_dir=store.parent / f"{store.name}.videos",
            )

        if cfg.collect.adaptive:
            results = _collect_in_waves(cfg, store, tasks, inits, run, about, rollout)
        else:
            todo = missing_specs(specs, Store(store).episodes, run)
            typer.echo(f"{store}: shard {shard}/{num_shards} of {cfg.collect.groups} groups x K={cfg.collect.group_size}: "
                       f"{len(specs)} episodes, {len(specs) - len(todo)} already committed, {len(todo)} to collect ({about})")
            results = rollout(todo, cfg.collect.videos) if todo else []
    if not results:
        return
    wins = sum(r.success for r in results)
    total = Store(store).num_episodes
    typer.echo(f"collected {len(results)} episodes, success {wins}/{len(results)} ({wins / len(results):.0%}); "
               f"'{store}' now holds {total} episodes")
    if len({r.spec.task_id for r in results}) > 1:
        typer.echo(f"success per task: {success_per_task(results)}")


def success_per_task(results: list) -> str:
    """``task 0 48/50 (96%), task 1 ...``: an expert's or a policy's rate on each task this run collected."""
    by_task: dict[int, list[bool]] = {}
    for result in results:
        by_task.setdefault(result.spec.task_id, []).append(result.success)
    return ", ".join(f"task {task} {sum(wins)}/{len(wins)} ({sum(wins) / len(wins):.0%})" for task, wins in sorted(by_task.items()))


def _collect_in_waves(cfg: Config, store: Path, tasks: list[int], inits: list[int], run: str, about: str,
                      rollout: Callable[[list, int], list]) -> list:
    """Plan a wave from what the store holds, collect it, repeat: until the run holds collect.groups
    groups or every pair is skipped. Each wave collects at least one episode, so this ends."""
    from cfgrl.rollout.plan import missing_specs
    from cfgrl.rollout.waves import PRIORITY_NAMES, next_wave
    from cfgrl.store import Store

    c = cfg.collect
    typer.echo(f"{store}: adaptive, {c.groups} groups x K={c.group_size} in waves over {len(tasks) * len(inits)} "
               f"(task, init state) pairs, patience {c.adaptive_patience} ({about})")
    results: list = []
    while True:
        committed = Store(store).episodes
        wave = next_wave(tasks, inits, committed, run, c)
        todo = missing_specs(wave.specs, committed, run)
        if not todo:
            if wave.started >= c.groups:
                typer.echo(f"the run holds its {c.groups} groups; nothing left to collect")
            else:
                typer.echo(f"every one of the {wave.num_pairs} (task, init state) pairs is skipped (its last "
                           f"{c.adaptive_patience} group(s) all succeeded, or all failed): stopping at {wave.started} of "
                           f"{c.groups} groups; raise collect.adaptive_patience or collect from another policy")
            return results
        new = ", ".join(f"{n} {name}" for n, name in zip(wave.by_priority, PRIORITY_NAMES) if n)
        finishing = f", finishing {wave.unfinished} started groups" if wave.unfinished else ""
        typer.echo(f"wave: {wave.started}/{c.groups} groups started, {wave.skipped}/{wave.num_pairs} pairs skipped; "
                   f"{sum(wave.by_priority)} new groups ({new or 'none'}){finishing}: {len(todo)} episodes")
        results += rollout(todo, c.videos if not results else 0)  # films the first wave only
