"""From finished episodes to the results table: success per task, per suite and overall.

Every arm (the policy at each w, plus the baseline checkpoint) ran the same slots, so each row also
carries the paired difference against the policy at w = 1 (the plain conditional policy, i.e. what
CFGRL trained) over the same slots. Files: ``results.json`` (schema-stamped) and ``results.csv``
(the same rows, flat).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import BASELINE, POLICY, EvalEpisode, Slot
from cfgrl.evaluate.stats import CONFIDENCE, paired_difference, wilson_interval
from cfgrl.schemas import EVAL_RESULTS

REFERENCE_CFG_SCALE = 1.0
ROW_COLUMNS = [
    "arm", "role", "cfg_scale", "scope", "suite", "task_id", "prompt", "episodes", "successes",
    "success_rate", "ci_low", "ci_high", "diff_vs_w1", "diff_ci_low", "diff_ci_high",
]

Arm = tuple[str, float]  # (role, cfg_scale)


def arm_name(role: str, cfg_scale: float) -> str:
    return "baseline" if role == BASELINE else f"w={cfg_scale:g}"


def _scopes(slots: list[Slot]) -> list[tuple[dict[str, Any], list[Slot]]]:
    """(row labels, slots) for overall, each suite, each task, in that order."""
    scopes = [({"scope": "overall", "suite": "", "task_id": None, "prompt": ""}, slots)]
    suites = list(dict.fromkeys(s.suite for s in slots))
    for suite in suites:
        scopes.append(({"scope": "suite", "suite": suite, "task_id": None, "prompt": ""}, [s for s in slots if s.suite == suite]))
    for suite in suites:
        for task_id in dict.fromkeys(s.task_id for s in slots if s.suite == suite):
            chosen = [s for s in slots if s.suite == suite and s.task_id == task_id]
            scopes.append(({"scope": "task", "suite": suite, "task_id": task_id, "prompt": chosen[0].prompt}, chosen))
    return scopes


def summarise(outcomes: dict[EvalEpisode, bool], slots: list[Slot], arms: list[Arm]) -> list[dict[str, Any]]:
    """One row per (arm, scope). ``outcomes`` must hold every (arm, slot) episode."""
    success = {arm: {} for arm in arms}
    for episode, ok in outcomes.items():
        arm = (episode.role, episode.cfg_scale)
        if arm in success:
            success[arm][episode.slot] = bool(ok)
    for arm in arms:
        missing = len(slots) - len(success[arm])
        if missing:
            raise CfgrlError(f"{arm_name(*arm)} lacks {missing} of {len(slots)} episodes; rerun the evaluation to finish them")
    reference = (POLICY, REFERENCE_CFG_SCALE)
    rows = []
    for arm in arms:
        for labels, chosen in _scopes(slots):
            outcome = [success[arm][s] for s in chosen]
            k, n = sum(outcome), len(outcome)
            low, high = wilson_interval(k, n)
            row = {"arm": arm_name(*arm), "role": arm[0], "cfg_scale": arm[1], **labels, "episodes": n, "successes": k,
                   "success_rate": k / n, "ci_low": low, "ci_high": high,
                   "diff_vs_w1": None, "diff_ci_low": None, "diff_ci_high": None}
            if reference in success and arm != reference:
                d = paired_difference(outcome, [success[reference][s] for s in chosen])
                row.update(diff_vs_w1=d.diff, diff_ci_low=d.low, diff_ci_high=d.high)
            rows.append(row)
    return rows


def best_cfg_scale(results: dict[str, Any]) -> float:
    """The guidance weight with the highest overall success; ties go to the higher lower bound, then
    to the smaller w (less guidance, less drift from the data)."""
    overall = [r for r in results["rows"] if r["role"] == POLICY and r["scope"] == "overall"]
    if not overall:
        raise CfgrlError("the results hold no policy rows; nothing to choose a guidance weight from")
    best = max(overall, key=lambda r: (r["success_rate"], r["ci_low"], -r["cfg_scale"]))
    return float(best["cfg_scale"])


def build_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    results = {
        **EVAL_RESULTS.stamp(),
        **meta,
        "confidence": CONFIDENCE,
        "interval": "wilson score",
        "paired_interval": "newcombe square-and-add for paired proportions (1998, method 10), against w=1 on the same episodes",
        "rows": rows,
    }
    results["best_cfg_scale"] = best_cfg_scale(results)
    return results


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    _atomic_write(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    table = pd.DataFrame(results["rows"], columns=ROW_COLUMNS).astype({"task_id": "Int64"})  # blank, not 0.0, off task rows
    _atomic_write(out_dir / "results.csv", table.to_csv(index=False))


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` (or the run directory holding it), checking its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise CfgrlError(f"no evaluation results at '{path}'")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CfgrlError(f"'{path}' is not valid JSON") from None
    EVAL_RESULTS.check(results, f"evaluation results '{path}'")
    return results


def format_table(results: dict[str, Any]) -> str:
    """The overall rows, one line per arm, for the terminal."""
    lines = [f"{'arm':>10}  {'success':>7}  {'95% CI':>15}  {'vs w=1 (paired 95% CI)':>28}"]
    for r in results["rows"]:
        if r["scope"] != "overall":
            continue
        diff = "" if r["diff_vs_w1"] is None else f"{r['diff_vs_w1']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]"
        lines.append(f"{r['arm']:>10}  {r['success_rate']:7.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  {diff:>28}")
    return "\n".join(lines)
