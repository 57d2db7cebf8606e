"""From finished episodes to the results table: success per split, task, suite and overall.

Every arm (the policy at each w, plus the baseline checkpoint) ran the same test slots, so each row
also carries the paired difference against the policy at w = 1 (the plain conditional policy, i.e.
what CFGRL trained) over the same slots. The guidance weight is chosen on the validation rows and
reported on the test rows (``chosen_cfg_scale``). Files: ``results.json`` (schema-stamped) and
``results.csv`` (the same rows, flat).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cfgrl import atomic, provenance
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import BASELINE, POLICY, TEST, VALIDATION, EvalEpisode, Slot
from cfgrl.evaluate.stats import CONFIDENCE, paired_difference, wilson_interval
from cfgrl.schemas import EVAL_RESULTS

REFERENCE_CFG_SCALE = 1.0
ROW_COLUMNS = [
    "split", "arm", "role", "cfg_scale", "scope", "suite", "task_id", "prompt", "episodes", "successes",
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
    """One row per (split, arm, scope): the test split for every arm, the validation split (when
    there are validation slots) for the policy's arms. ``outcomes`` must hold every such episode."""
    rows = []
    for split in (TEST, VALIDATION):
        chosen = [s for s in slots if s.split == split]
        split_arms = arms if split == TEST else [arm for arm in arms if arm[0] == POLICY]
        if chosen:
            rows += [{"split": split, **row} for row in _summarise_split(outcomes, chosen, split_arms)]
    return rows


def _summarise_split(outcomes: dict[EvalEpisode, bool], slots: list[Slot], arms: list[Arm]) -> list[dict[str, Any]]:
    success = {arm: {} for arm in arms}
    wanted = set(slots)
    for episode, ok in outcomes.items():
        arm = (episode.role, episode.cfg_scale)
        if arm in success and episode.slot in wanted:
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


def overall_rows(results: dict[str, Any], split: str = TEST, role: str | None = None) -> list[dict[str, Any]]:
    """The overall rows of one split (and role), one per arm."""
    return [r for r in results["rows"] if r["split"] == split and r["scope"] == "overall" and role in (None, r["role"])]


def choose_cfg_scale(rows: list[dict[str, Any]]) -> float | None:
    """The guidance weight with the highest overall success on validation rows; ties go to the higher
    lower bound, then to the smaller w (less guidance, less drift from the data). One w swept: that
    w (nothing to choose). No validation rows and several w: None, never a choice made on test."""
    policy = [r for r in rows if r["role"] == POLICY and r["scope"] == "overall"]
    if len({r["cfg_scale"] for r in policy}) == 1:
        return float(policy[0]["cfg_scale"])
    candidates = [r for r in policy if r["split"] == VALIDATION]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: (r["success_rate"], r["ci_low"], -r["cfg_scale"]))
    return float(best["cfg_scale"])


def chosen_cfg_scale(results: dict[str, Any], who: str) -> float:
    """The validation-chosen w of ``results``, for a caller (``who``) that needs one."""
    w = results.get("chosen_cfg_scale")
    if w is None:
        raise CfgrlError(
            f"{who} needs a guidance weight chosen on validation init states, and evaluation '{results['out_dir']}' "
            "ran none: set evaluate.validation_init_states"
        )
    return float(w)


def build_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    results = {
        **EVAL_RESULTS.stamp(),
        **meta,
        "confidence": CONFIDENCE,
        "interval": "wilson score",
        "paired_interval": "newcombe square-and-add for paired proportions (1998, method 10), against w=1 on the same episodes",
        "rows": rows,
        "provenance": provenance.record(),
    }
    if not any(r["role"] == POLICY for r in rows):
        raise CfgrlError("the results hold no policy rows; nothing to choose a guidance weight from")
    results["chosen_cfg_scale"] = choose_cfg_scale(rows)
    return results


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    atomic.write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    table = pd.DataFrame(results["rows"], columns=ROW_COLUMNS).astype({"task_id": "Int64"})  # blank, not 0.0, off task rows
    atomic.write_text(out_dir / "results.csv", table.to_csv(index=False))


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


def reported_split(results: dict[str, Any]) -> str:
    """The split an evaluation reports: test, or validation when it ran validation alone."""
    return TEST if overall_rows(results, TEST) else VALIDATION


def format_table(results: dict[str, Any]) -> str:
    """The overall test rows (validation rows for a validation-only run), one line per arm, the
    validation success beside them, the chosen w marked, for the terminal."""
    validation = {r["arm"]: r["success_rate"] for r in overall_rows(results, VALIDATION)}
    chosen = results.get("chosen_cfg_scale")
    split = reported_split(results)
    lines = [f"{'arm':>12}  {split[:6]:>6}  {'95% CI':>15}  {'vs w=1 (paired 95% CI)':>28}  {'validation':>10}"]
    for r in overall_rows(results, split):
        diff = "" if r["diff_vs_w1"] is None else f"{r['diff_vs_w1']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]"
        mark = "*" if r["role"] == POLICY and r["cfg_scale"] == chosen else " "
        val = f"{validation[r['arm']]:.3f}" if r["arm"] in validation else ""
        lines.append(f"{mark}{r['arm']:>11}  {r['success_rate']:6.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  {diff:>28}  {val:>10}")
    if chosen is None:
        lines.append("no w chosen: no validation init states (set evaluate.validation_init_states); test rows only")
    else:
        what = "its test row is the reported result" if split == TEST else "validation only: nothing is reported on test"
        lines.append(f"* chosen w = {chosen:g} ({results.get('chosen_on', 'validation')}); {what}")
    return "\n".join(lines)
