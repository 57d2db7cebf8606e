"""``evaluate_policy``: roll a checkpoint out at every guidance weight on the same episodes, then
summarise, plot and write the results.

Steps: resolve the slots (the paired design, ``plan``), skip every episode the run directory's
``episodes.jsonl`` already holds (resume), roll out the rest on collect's engine one (role, w,
suite) batch at a time committing each finished episode to the log (and, with a store, to the
store: one run id per w, one group per (task, init state)), then build the tables, the plot and
the files from the log.

Across machines: ``evaluate_shard`` runs one shard of the plan (whole slots) into its own run
directory, and ``merge_shards`` turns every shard of one plan into the unsharded run's files
(``shards``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfgrl.config import Config, EnvConfig, validate
from cfgrl.errors import CfgrlError
from cfgrl.evaluate import rollouts, shards
from cfgrl.evaluate.ledger import EpisodeLedger, checkpoint_fingerprint, read_committed, run_lock
from cfgrl.evaluate.plan import (
    BASELINE, BASELINE_CFG_SCALE, POLICY, TEST, VALIDATION, EvalEpisode, Plan, Slot, check_protocol, chooses_w, make_plan,
    slots_for_suite,
)
from cfgrl.evaluate.plot import plot_success_vs_w
from cfgrl.evaluate.splits import Triple, check_splits, statement, training_of
from cfgrl.evaluate.summary import arm_name, build_results, summarise, write_results
from cfgrl.policy.model import validate_cfg_scale
from cfgrl.rollout.plan import EnvInfo, env_info
from cfgrl.rollout.specs import check_shard
from cfgrl.rollout.videos import require_video_support
from cfgrl.store import StoreLayout, StoreWriter


def default_out_dir(policy_dir: str | Path, run_name: str) -> Path:
    return Path(policy_dir) / "eval" / run_name


def default_run_name(cfg: Config, suites: list[str]) -> str:
    """Stable across reruns of the same command, so an interrupted evaluation resumes by default."""
    return f"{cfg.env.name}-{'+'.join(suites)}-{cfg.evaluate.protocol}-seed{cfg.evaluate.seed}"


def resolve_slots(cfg: Config, suites: list[str]) -> tuple[list[Slot], dict[str, EnvConfig], EnvInfo, dict[Triple, list[float]]]:
    """The slots of every suite, each suite's env config, the env's cameras and image size, and what
    each (suite, task, init state) stands for where the id alone does not fix it.
    collect's ``env_info`` asks a simulator with a GL context (LIBERO) from a spawned process only."""
    slots: list[Slot] = []
    env_cfgs: dict[str, EnvConfig] = {}
    init_configs: dict[Triple, list[float]] = {}
    for suite in suites:
        env_cfg = env_cfgs[suite] = dataclasses.replace(cfg.env, suite=suite)
        info = env_info(env_cfg)  # raises a clear error for an unknown suite
        slots += slots_for_suite(env_cfg, list(info.tasks), cfg)
        init_configs.update({(suite, *key): config for key, config in info.init_configs.items()})
    return slots, env_cfgs, info, init_configs


def evaluate_policy(
    cfg: Config,
    policy_dir: str | Path,
    out_dir: str | Path | None = None,
    baseline_dir: str | Path | None = None,
    baseline_cfg_scale: float = BASELINE_CFG_SCALE,
    store: str | Path | None = None,
    suites: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``policy_dir`` at every ``cfg.evaluate.cfg_scales`` (plus ``baseline_dir`` at ``baseline_cfg_scale``).

    Writes results.json, results.csv, success_vs_w.png, config.json and episodes.jsonl into
    ``out_dir`` (default ``<policy_dir>/eval/<run name>``) and returns the results dict.
    """
    job = _prepare(cfg, policy_dir, out_dir, baseline_dir, baseline_cfg_scale, store, suites, None, progress)
    with run_lock(job.out_dir):
        ledger = _execute(job)
        return write_run(job.plan, ledger.records, job.meta, job.out_dir)


def evaluate_shard(
    cfg: Config,
    policy_dir: str | Path,
    shard: int,
    num_shards: int,
    out_dir: str | Path | None = None,
    baseline_dir: str | Path | None = None,
    baseline_cfg_scale: float = BASELINE_CFG_SCALE,
    store: str | Path | None = None,
    suites: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run shard ``shard`` of ``num_shards`` of the evaluation ``evaluate_policy`` would run, into its
    own run directory (default ``<policy_dir>/eval/<run name>-shard<i>of<N>``): episodes.jsonl,
    config.json and the shard manifest (``shards``), no results table; returns the manifest."""
    job = _prepare(cfg, policy_dir, out_dir, baseline_dir, baseline_cfg_scale, store, suites, (shard, num_shards), progress)
    manifest = shards.manifest(job.plan, shard, num_shards, job.meta)
    with run_lock(job.out_dir):
        shards.write_manifest(job.out_dir, manifest)
        _execute(job)
    return manifest


def merge_shards(dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Combine the shard run directories ``dirs`` of one evaluation into ``out_dir``: its
    episodes.jsonl (the union), config.json, results.json, results.csv and success_vs_w.png, equal row
    for row to the unsharded run's. Refuses, writing nothing, unless ``dirs`` are every shard of one
    plan once, each complete."""
    dirs, out_dir = [Path(d) for d in dirs], Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CfgrlError(f"output '{out_dir}' exists and is not a directory")
    if out_dir.resolve() in {d.resolve() for d in dirs}:
        raise CfgrlError(f"--out '{out_dir}' is one of the shards; give the merged run its own directory")
    gathered = shards.gather(dirs)
    shard_meta = gathered.manifests[0]["meta"]
    stores = {m["meta"]["store"] for m in gathered.manifests}
    meta = {**shard_meta, "out_dir": str(out_dir), "store": stores.pop() if len(stores) == 1 else None,
            "shards": [str(d) for d in gathered.dirs]}
    with run_lock(out_dir):
        (out_dir / "config.json").write_text(json.dumps(shard_meta["config"], indent=2, sort_keys=True) + "\n")  # as Config.save
        ledger = EpisodeLedger(out_dir / "episodes.jsonl")
        keys = [gathered.plan.key(episode) for episode in gathered.plan.episodes()]
        ledger.extend([gathered.records[key] for key in keys if key not in ledger])  # a previous merge's records stay
        return write_run(gathered.plan, gathered.records, meta, out_dir)


def write_run(plan: Plan, records: dict[str, dict[str, Any]], meta: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The results of a finished plan from its episode records: results.json, results.csv and the plot."""
    outcomes = {ep: bool(records[plan.key(ep)]["success"]) for ep in plan.episodes()}
    # what keys this plan's episodes in the log, which may hold other plans' (``compare`` reads only these)
    meta = {**meta, "checkpoints": plan.checkpoints, "settings_digest": plan.settings}
    results = build_results(summarise(outcomes, plan.slots, plan.arms()), meta)
    write_results(results, out_dir)
    plot_success_vs_w(results, out_dir / "success_vs_w.png")
    return results


@dataclass(frozen=True)
class _Job:
    """An evaluation (or one shard of it), every input checked and nothing written yet."""

    cfg: Config
    plan: Plan
    mine: list[EvalEpisode]  # this shard's episodes (all of the plan's when unsharded)
    dirs: dict[str, Path]  # role -> checkpoint directory
    env_cfgs: dict[str, EnvConfig]  # per suite
    info: EnvInfo
    out_dir: Path
    store: tuple[Path, StoreLayout] | None
    meta: dict[str, Any]  # results.json's description of the run
    first: list[tuple[str, Any]]  # the first checkpoint with work, loaded (role, policy): popped by the run, so it can be freed
    progress: bool


def _prepare(
    cfg: Config, policy_dir: str | Path, out_dir: str | Path | None, baseline_dir: str | Path | None, baseline_cfg_scale: float,
    store: str | Path | None, suites: list[str] | None, shard: tuple[int, int] | None, progress: bool,
) -> _Job:
    """Check every input and plan the run (``shard``: (index, count), or None for the whole plan),
    writing nothing: bad input leaves no output behind."""
    validate(cfg)  # refuses non-finite or negative weights too
    check_protocol(cfg)
    if shard is not None:
        check_shard(*shard)  # refuses an index out of range now, before the env starts
    suites = list(dict.fromkeys(suites or [cfg.env.suite]))
    policy_dir = rollouts.check_policy_dir(policy_dir, "policy")
    dirs = {POLICY: policy_dir}
    if baseline_dir is not None:
        if cfg.evaluate.validation_only:
            raise CfgrlError("--baseline runs on test episodes, and evaluate.validation_only runs none; drop one of them")
        dirs[BASELINE] = rollouts.check_policy_dir(baseline_dir, "baseline")
        baseline_cfg_scale = validate_cfg_scale(baseline_cfg_scale)
    if out_dir is None:
        suffix = f"-shard{shard[0]}of{shard[1]}" if shard is not None else ""
        out_dir = default_out_dir(policy_dir, default_run_name(cfg, suites) + suffix)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CfgrlError(f"output '{out_dir}' exists and is not a directory")

    if cfg.evaluate.videos > 0:
        try:
            require_video_support()
        except CfgrlError:
            raise CfgrlError("evaluate.videos > 0 needs imageio-ffmpeg for MP4s; `pip install imageio-ffmpeg`, or set evaluate.videos=0") from None
    slots, env_cfgs, info, init_configs = resolve_slots(cfg, suites)
    splits = check_splits(cfg.evaluate.protocol, slots, training_of(policy_dir), init_configs)
    plan = make_plan(cfg, slots, baseline_cfg_scale if baseline_dir is not None else None,
                     {role: checkpoint_fingerprint(path) for role, path in dirs.items()})
    mine = plan.episodes(*shard) if shard is not None else plan.episodes()
    layout = rollouts.store_layout(info.camera_names, info.image_size)

    meta = {
        "policy": str(policy_dir), "baseline": str(dirs.get(BASELINE)) if baseline_dir is not None else None,
        "env": cfg.env.name, "suites": suites, "protocol": cfg.evaluate.protocol,
        "cfg_scales": plan.cfg_scales, "baseline_cfg_scale": plan.baseline_cfg_scale,
        "episodes_per_w": sum(s.split == TEST for s in slots), "out_dir": str(out_dir),
        "store": str(store) if store else None, "config": cfg.to_dict(), **validation_meta(cfg, slots, splits),
    }
    if shard is not None:
        shards.check_same_shard(out_dir, shards.manifest(plan, *shard, meta))

    recorded = read_committed(out_dir / "episodes.jsonl")
    pending = [ep for ep in mine if plan.key(ep) not in recorded]
    # The first checkpoint with work is loaded before anything is written: one that does not load,
    # or does not fit the env, is bad input and must leave the run directory as it was.
    first = [(pending[0].role, rollouts.load_checkpoint(dirs[pending[0].role], cfg, info))] if pending else []
    if store is not None:
        StoreWriter(store, layout).close()  # a store of another layout or schema fails here, before any rollout
    return _Job(cfg, plan, mine, dirs, env_cfgs, info, out_dir, (Path(store), layout) if store is not None else None, meta, first, progress)


def _execute(job: _Job) -> EpisodeLedger:
    """Roll out the episodes of ``job`` its run directory's log lacks (the caller holds its lock)."""
    job.cfg.save(job.out_dir / "config.json")  # the resolved configuration, reloadable with config_from_dict
    ledger = EpisodeLedger(job.out_dir / "episodes.jsonl")
    pending = [ep for ep in job.mine if job.plan.key(ep) not in ledger]  # read under the lock
    if len(pending) < len(job.mine):
        print(f"resuming: {len(job.mine) - len(pending)} of {len(job.mine)} episodes already recorded in {job.out_dir}", file=sys.stderr)
    # One store writer for the whole run: the store is read (healing) and written under its lock only.
    with StoreWriter(*job.store, commit_seconds=0) if job.store is not None else nullcontext() as writer:
        _run_pending(pending, job, ledger, writer)
    return ledger


def validation_meta(cfg: Config, slots: list[Slot], splits: dict[str, Any]) -> dict[str, Any]:
    """How w was chosen, for results.json: on which validation episodes, and what the split checks found
    (``splits.check_splits``)."""
    validation = [s for s in slots if s.split == VALIDATION]
    if not validation:
        return {"validation": None, "chosen_on": None if chooses_w(cfg) else "the only w swept", "splits": splits}
    return {
        "validation": {"episodes_per_w": len(validation), "init_states": sorted({s.init_state_id for s in validation}),
                       "shares_test_init_states": splits["validation_meets_test"] > 0},
        "chosen_on": statement(cfg.evaluate.protocol, splits, len(validation)),
        "splits": splits,
    }


def _run_pending(pending: list[EvalEpisode], job: _Job, ledger: EpisodeLedger, store: StoreWriter | None) -> None:
    """One engine call per (role, w, suite, split): the engine takes one policy and one w per call. Each
    checkpoint is loaded only when it has episodes left (the first one already is: ``job.first``), and
    dropped before the next one loads."""
    loaded = job.first.pop() if job.first else None
    batches: dict[tuple[str, float, str, str], list[EvalEpisode]] = {}
    for ep in pending:
        batches.setdefault((ep.role, ep.cfg_scale, ep.slot.suite, ep.slot.split), []).append(ep)
    for (role, w, suite, split), batch in batches.items():
        fingerprint = job.plan.checkpoints[role]
        run = rollouts.store_run_id(batch[0], fingerprint, job.plan.settings)

        def commit(episode: EvalEpisode, success: bool, length: int) -> None:
            ledger.append({"key": job.plan.key(episode), "checkpoint": fingerprint, "store_run_id": run,
                           **episode.record_fields(), "success": bool(success), "length": int(length)})

        if store is not None:
            batch = rollouts.heal_from_store(batch, store.path, run, commit)
            if not batch:
                continue
        if loaded is None or loaded[0] != role:
            loaded = None  # free the previous checkpoint before loading the next
            loaded = (role, rollouts.load_checkpoint(job.dirs[role], job.cfg, job.info))
        name = arm_name(role, w)
        print(f"evaluate {name} on {suite} ({split}): {len(batch)} episodes", file=sys.stderr)
        rollouts.roll_out(
            job.cfg, job.env_cfgs[suite], loaded[1], w, batch, run, commit, store=store,
            video_dir=job.out_dir / "videos" / name / suite if job.cfg.evaluate.videos > 0 and split == TEST else None, progress=job.progress,
        )
