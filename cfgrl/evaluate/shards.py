"""Evaluation across machines: each job of an array runs one shard of the paired plan into its own
run directory, and the merge combines the shards into the results of the whole evaluation.

A shard is a set of whole slots (``plan.shard_slots``), so every w of a slot and the baseline's
episode of it run in the same shard and the pairing holds within it. A shard's run directory holds
its ``episodes.jsonl``, ``config.json`` and ``shard.json``: the whole plan (slots, weights, checkpoint
fingerprints, settings), its digest, the shard's index and count, and the results' description. It
holds no results table: only every shard together gives one. The merge needs neither the
checkpoints nor the simulator, and refuses anything that would not equal the unsharded run: shards
of different plans, a shard missing or given twice, a shard with episodes still to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfgrl import atomic
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.ledger import SHARD_MANIFEST, read_committed
from cfgrl.evaluate.plan import EvalEpisode, Plan
from cfgrl.evaluate.summary import arm_name
from cfgrl.schemas import EVAL_RESULTS

MANIFEST_KIND = "shard"
SHARD_HINT = "give the --out directories of `cfgrl evaluate --shard i --num-shards N`"
SHOWN_MISSING = 3  # missing episodes named in the message; the count says the rest


def manifest(plan: Plan, shard: int, num_shards: int, meta: dict[str, Any]) -> dict[str, Any]:
    return {**EVAL_RESULTS.stamp(), "kind": MANIFEST_KIND, "plan_digest": plan.digest(), "shard": shard,
            "num_shards": num_shards, "episodes": len(plan.episodes(shard, num_shards)), "plan": plan.to_dict(), "meta": meta}


def write_manifest(run_dir: Path, content: dict[str, Any]) -> None:
    atomic.write_text(run_dir / SHARD_MANIFEST, json.dumps(content, indent=2) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """A shard directory's manifest, checked: schema, kind, and a digest that matches its plan."""
    path = run_dir / SHARD_MANIFEST
    if not path.is_file():
        raise CfgrlError(f"'{run_dir}' is not an evaluation shard (no {SHARD_MANIFEST}); {SHARD_HINT}")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CfgrlError(f"'{path}' is not valid JSON; rerun that shard's command into a new --out") from None
    EVAL_RESULTS.check(content, f"shard manifest '{path}'")
    if content.get("kind") != MANIFEST_KIND:
        raise CfgrlError(f"'{path}' is not a shard manifest (kind {content.get('kind')!r}); {SHARD_HINT}")
    try:
        consistent = Plan.from_dict(content["plan"]).digest() == content["plan_digest"]
    except (KeyError, TypeError, ValueError):
        consistent = False
    if not consistent:
        raise CfgrlError(f"'{path}' is damaged (its plan does not match its digest); rerun that shard's command into a new --out")
    return content


def check_same_shard(run_dir: Path, planned: dict[str, Any]) -> None:
    """A shard resumes only its own run directory: another shard's (or plan's) episodes and manifest
    there must not be overwritten."""
    if not (run_dir / SHARD_MANIFEST).exists():
        return
    found = read_manifest(run_dir)
    if (found["plan_digest"], found["shard"], found["num_shards"]) != (planned["plan_digest"], planned["shard"], planned["num_shards"]):
        raise CfgrlError(
            f"'{run_dir}' holds shard {found['shard']} of {found['num_shards']} of evaluation plan {found['plan_digest']}, "
            f"not shard {planned['shard']} of {planned['num_shards']} of plan {planned['plan_digest']}; give each shard its own --out"
        )


@dataclass(frozen=True)
class Gathered:
    """Every shard of one evaluation, checked complete: what the merge writes from."""

    plan: Plan
    dirs: list[Path]  # in shard order
    manifests: list[dict[str, Any]]  # in shard order
    records: dict[str, dict[str, Any]]  # key -> record of every planned episode


def gather(dirs: list[Path]) -> Gathered:
    """Read and check the shards in ``dirs``: one plan, each shard exactly once, none incomplete."""
    if not dirs:
        raise CfgrlError(f"--merge needs the shard directories; {SHARD_HINT}")
    manifests = [read_manifest(d) for d in dirs]
    for d, m in zip(dirs[1:], manifests[1:]):
        _check_same_plan(dirs[0], manifests[0], d, m)
    ordered = _every_shard_once(dirs, manifests)
    plan = Plan.from_dict(manifests[0]["plan"])
    records: dict[str, dict[str, Any]] = {}
    for index, d in enumerate(ordered):
        records.update(_shard_records(plan, index, len(ordered), d))
    return Gathered(plan, ordered, [manifests[dirs.index(d)] for d in ordered], records)


def _check_same_plan(first: Path, a: dict[str, Any], other: Path, b: dict[str, Any]) -> None:
    if a["plan_digest"] != b["plan_digest"]:
        raise CfgrlError(f"'{other}' and '{first}' are shards of different evaluations ({_plan_difference(a['plan'], b['plan'])}); "
                         "merge the shards of one evaluation only")
    if a["num_shards"] != b["num_shards"]:
        raise CfgrlError(f"'{other}' is one of {b['num_shards']} shards and '{first}' one of {a['num_shards']}; "
                         "merge the shards of one --num-shards split only")


def _plan_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What tells two plans apart, for the refusal message."""
    for key, what in (("checkpoints", "checkpoints"), ("settings", "env/inference settings"), ("cfg_scales", "cfg_scales"),
                      ("baseline_cfg_scale", "baseline w"), ("protocol", "protocol")):
        if a[key] != b[key]:
            return f"their {what} differ: {a[key]} and {b[key]}"
    return f"their slots differ: {len(a['slots'])} and {len(b['slots'])} (task, init state, seed) slots"


def _every_shard_once(dirs: list[Path], manifests: list[dict[str, Any]]) -> list[Path]:
    """The directories in shard order, refusing a shard given twice or missing."""
    num_shards = manifests[0]["num_shards"]
    by_index: dict[int, Path] = {}
    for d, m in zip(dirs, manifests):
        if m["shard"] in by_index:
            raise CfgrlError(f"shard {m['shard']} of {num_shards} is given twice ('{by_index[m['shard']]}' and '{d}'); give each shard once")
        by_index[m["shard"]] = d
    missing = [i for i in range(num_shards) if i not in by_index]
    if missing:
        raise CfgrlError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {num_shards} "
                         f"{'are' if len(missing) > 1 else 'is'} missing; give every shard's directory")
    return [by_index[i] for i in range(num_shards)]


def _shard_records(plan: Plan, index: int, num_shards: int, run_dir: Path) -> dict[str, dict[str, Any]]:
    """The records of shard ``index``'s planned episodes, refusing a shard that has not run them all."""
    logged = read_committed(run_dir / "episodes.jsonl")
    expected = plan.episodes(index, num_shards)
    missing = [ep for ep in expected if plan.key(ep) not in logged]
    if missing:
        named = "; ".join(_describe(ep) for ep in missing[:SHOWN_MISSING]) + ("; …" if len(missing) > SHOWN_MISSING else "")
        raise CfgrlError(f"shard {index} ('{run_dir}') lacks {len(missing)} of {len(expected)} episodes ({named}); "
                         "rerun that shard's command to finish them")
    return {plan.key(ep): logged[plan.key(ep)] for ep in expected}


def _describe(episode: EvalEpisode) -> str:
    s = episode.slot
    return f"{arm_name(episode.role, episode.cfg_scale)} {s.split} {s.suite} task {s.task_id} init {s.init_state_id} repeat {s.repeat}"
