"""``evaluate_policy``: roll a checkpoint out at every guidance weight on the same episodes, then
summarise, plot and write the results.

Steps: resolve the slots (the paired design, ``plan``), skip every episode the run directory's
``episodes.jsonl`` already holds (resume), roll out the rest on collect's engine one (role, w,
suite) batch at a time committing each finished episode to the log (and, with a store, to the
store: one run id per w, one group per (task, init state)), then build the tables, the plot and
the files from the log.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfgrl.collect.plan import EnvInfo, env_info
from cfgrl.collect.videos import require_video_support
from cfgrl.config import Config, EnvConfig, validate
from cfgrl.errors import CfgrlError
from cfgrl.evaluate import rollouts
from cfgrl.evaluate.ledger import EpisodeLedger, checkpoint_fingerprint, episode_key, read_committed
from cfgrl.evaluate.plan import (
    BASELINE, BASELINE_CFG_SCALE, POLICY, TEST, VALIDATION, EvalEpisode, Slot, check_protocol, plan_episodes, settings_digest,
    slots_for_suite,
)
from cfgrl.evaluate.plot import plot_success_vs_w
from cfgrl.evaluate.summary import arm_name, build_results, summarise, write_results
from cfgrl.policy.model import validate_cfg_scale
from cfgrl.store import StoreWriter


def default_out_dir(policy_dir: str | Path, run_name: str) -> Path:
    return Path(policy_dir) / "eval" / run_name


def default_run_name(cfg: Config, suites: list[str]) -> str:
    """Stable across reruns of the same command, so an interrupted evaluation resumes by default."""
    return f"{cfg.env.name}-{'+'.join(suites)}-{cfg.evaluate.protocol}-seed{cfg.evaluate.seed}"


def resolve_slots(cfg: Config, suites: list[str]) -> tuple[list[Slot], dict[str, EnvConfig], EnvInfo]:
    """The slots of every suite, each suite's env config, and the env's cameras and image size.
    collect's ``env_info`` asks a simulator with a GL context (LIBERO) from a spawned process only."""
    slots: list[Slot] = []
    env_cfgs: dict[str, EnvConfig] = {}
    for suite in suites:
        env_cfg = env_cfgs[suite] = dataclasses.replace(cfg.env, suite=suite)
        info = env_info(env_cfg)  # raises a clear error for an unknown suite
        slots += slots_for_suite(env_cfg, list(info.tasks), cfg)
    return slots, env_cfgs, info


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
    validate(cfg)
    check_protocol(cfg)
    suites = list(dict.fromkeys(suites or [cfg.env.suite]))
    policy_dir = rollouts.check_policy_dir(policy_dir, "policy")
    baseline_dir = rollouts.check_policy_dir(baseline_dir, "baseline") if baseline_dir is not None else None
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(policy_dir, default_run_name(cfg, suites))
    if out_dir.exists() and not out_dir.is_dir():
        raise CfgrlError(f"output '{out_dir}' exists and is not a directory")

    if cfg.evaluate.videos > 0:
        try:
            require_video_support()
        except CfgrlError:
            raise CfgrlError("evaluate.videos > 0 needs imageio-ffmpeg for MP4s; `pip install imageio-ffmpeg`, or set evaluate.videos=0") from None
    slots, env_cfgs, info = resolve_slots(cfg, suites)
    layout = rollouts.store_layout(info.camera_names, info.image_size)
    if store is not None:
        StoreWriter(store, layout).close()  # a store of another layout or schema fails here, before any rollout
    episodes = plan_episodes(slots, cfg.evaluate.cfg_scales, validate_cfg_scale(baseline_cfg_scale) if baseline_dir is not None else None)
    checkpoints = {POLICY: (policy_dir, checkpoint_fingerprint(policy_dir))}
    if baseline_dir is not None:
        checkpoints[BASELINE] = (baseline_dir, checkpoint_fingerprint(baseline_dir))
    settings = settings_digest(cfg)
    keys = {ep: episode_key(ep, checkpoints[ep.role][1], settings) for ep in episodes}

    recorded = read_committed(out_dir / "episodes.jsonl")
    pending = [ep for ep in episodes if keys[ep] not in recorded]
    # The first checkpoint with work is loaded before anything is written: one that does not load,
    # or does not fit the env, is bad input and must leave the run directory as it was.
    first = (pending[0].role, rollouts.load_checkpoint(checkpoints[pending[0].role][0], cfg, info)) if pending else None
    if len(pending) < len(episodes):
        print(f"resuming: {len(episodes) - len(pending)} of {len(episodes)} episodes already recorded in {out_dir}", file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir / "config.json")  # the resolved configuration, reloadable with config_from_dict
    ledger = EpisodeLedger(out_dir / "episodes.jsonl")
    # One writer for the whole run: the store is read (healing) and written under its lock only.
    with StoreWriter(store, layout, flush_every=1) if store is not None else nullcontext() as writer:
        context = _RunContext(cfg, keys, checkpoints, settings, ledger, env_cfgs, info, out_dir, writer, progress)
        _run_pending(pending, context, first)

    outcomes = {ep: bool(ledger.records[keys[ep]]["success"]) for ep in episodes}
    arms = list(dict.fromkeys((ep.role, ep.cfg_scale) for ep in episodes))
    meta = {
        "policy": str(policy_dir), "baseline": str(baseline_dir) if baseline_dir else None,
        "env": cfg.env.name, "suites": suites, "protocol": cfg.evaluate.protocol,
        "cfg_scales": [w for role, w in arms if role == POLICY], "baseline_cfg_scale": float(baseline_cfg_scale) if baseline_dir else None,
        "episodes_per_w": sum(s.split == TEST for s in slots), "out_dir": str(out_dir),
        "store": str(store) if store else None, "config": cfg.to_dict(), **validation_meta(cfg, slots),
    }
    results = build_results(summarise(outcomes, slots, arms), meta)
    write_results(results, out_dir)
    plot_success_vs_w(results, out_dir / "success_vs_w.png")
    return results


def validation_meta(cfg: Config, slots: list[Slot]) -> dict[str, Any]:
    """How w was chosen, for results.json: on which validation episodes, and whether they share
    the test init states (LIBERO's protocol: same init states, other episode seeds)."""
    validation = [s for s in slots if s.split == VALIDATION]
    if not validation:
        return {"validation": None, "chosen_on": "the only w swept" if len(set(cfg.evaluate.cfg_scales)) == 1 else None}
    shares = cfg.evaluate.protocol == "libero"
    where = "the test init states with other episode seeds" if shares else "validation init states disjoint from training and test"
    return {
        "validation": {"episodes_per_w": len(validation), "init_states": sorted({s.init_state_id for s in validation}),
                       "shares_test_init_states": shares},
        "chosen_on": f"validation: {len(validation)} episodes per w on {where}",
    }


@dataclass(frozen=True)
class _RunContext:
    """What every batch of one evaluation shares."""

    cfg: Config
    keys: dict[EvalEpisode, str]  # the episode log's key of every planned episode
    checkpoints: dict[str, tuple[Path, str]]  # role -> (directory, content fingerprint)
    settings: str  # digest of the env/inference settings that change outcomes
    ledger: EpisodeLedger
    env_cfgs: dict[str, EnvConfig]  # per suite
    env: EnvInfo  # cameras and image size, which a checkpoint must fit
    out_dir: Path
    store: StoreWriter | None  # flush_every=1: each episode is committed before it is logged
    progress: bool


def _run_pending(pending: list[EvalEpisode], ctx: _RunContext, loaded: tuple[str, Any] | None) -> None:
    """One engine call per (role, w, suite, split): the engine takes one policy and one w per call. Each
    checkpoint is loaded only when it has episodes left (``loaded``: the first one, as (role,
    policy)), and dropped before the next one loads."""
    batches: dict[tuple[str, float, str, str], list[EvalEpisode]] = {}
    for ep in pending:
        batches.setdefault((ep.role, ep.cfg_scale, ep.slot.suite, ep.slot.split), []).append(ep)
    for (role, w, suite, split), batch in batches.items():
        policy_dir, fingerprint = ctx.checkpoints[role]
        run = rollouts.store_run_id(batch[0], fingerprint, ctx.settings)

        def commit(episode: EvalEpisode, success: bool, length: int) -> None:
            ctx.ledger.append({"key": ctx.keys[episode], "checkpoint": fingerprint, "store_run_id": run,
                               **episode.record_fields(), "success": bool(success), "length": int(length)})

        if ctx.store is not None:
            batch = rollouts.heal_from_store(batch, ctx.store.path, run, commit)
            if not batch:
                continue
        if loaded is None or loaded[0] != role:
            loaded = None  # free the previous checkpoint before loading the next
            loaded = (role, rollouts.load_checkpoint(policy_dir, ctx.cfg, ctx.env))
        name = arm_name(role, w)
        print(f"evaluate {name} on {suite} ({split}): {len(batch)} episodes", file=sys.stderr)
        rollouts.roll_out(
            ctx.cfg, ctx.env_cfgs[suite], loaded[1], w, batch, run, commit, store=ctx.store,
            video_dir=ctx.out_dir / "videos" / name / suite if ctx.cfg.evaluate.videos > 0 and split == TEST else None, progress=ctx.progress,
        )
