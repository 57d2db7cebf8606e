"""`cfgrl spread`: the demonstration's comparison repeated over seeds, the base fixed.

One headline run is one draw: the rollouts collected, the condition-dropout draw and the training
noise all come from seeds, and a second machine's floating point alone moves the figures by several
points. For each seed s, ``collect.seed``, ``cfgrl.seed`` and ``train.seed`` are set to s and the
demonstration's comparison runs (``demo.compare``: round 1, filtered BC, weighted) from the same
base; the evaluation's episodes (``evaluate.seed``) stay fixed, so the seeds differ only in what
was trained. The report gives every arm's test success at its validation-chosen w per seed, and
the mean, standard deviation, minimum and maximum over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cfgrl import provenance
from cfgrl.config import Config, with_overrides
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import BASELINE, POLICY, require_validation
from cfgrl.evaluate.summary import load_results, overall_rows
from cfgrl.pipeline.demo import Timer, cfgrl_minus_baselines, compare, format_difference

SEED_KEYS = ("collect.seed", "cfgrl.seed", "train.seed")
ARMS = ("base", "cfgrl", "filtered_bc", "weighted")


def at_chosen(results: dict[str, Any]) -> tuple[float, float]:
    """(validation-chosen w, its overall test success) of one evaluation."""
    w = results["chosen_cfg_scale"]
    row = next(r for r in overall_rows(results, role=POLICY) if r["cfg_scale"] == w)
    return float(w), float(row["success_rate"])


def seed_row(first: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every arm's test success at its chosen w (the base has no w) for one seed, and CFGRL minus
    each baseline paired on the same test episodes."""
    round_results = load_results(first["eval"])
    base = next(r for r in overall_rows(round_results, role=BASELINE))
    row: dict[str, Any] = {"base": base["success_rate"]}
    for arm, results in (("cfgrl", round_results), *baselines.items()):
        row[f"{arm}_w"], row[arm] = at_chosen(results)
    row["cfgrl_minus"] = cfgrl_minus_baselines(first, baselines)
    return row


def spread_summary(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for arm in ARMS:
        values = np.array([row[arm] for row in per_seed.values()])
        summary[arm] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                        "min": float(values.min()), "max": float(values.max())}
    return summary


def run_spread(cfg: Config, root: Path, base: Path, seeds: list[int]) -> dict[str, Any]:
    require_validation(cfg, "cfgrl spread")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise CfgrlError(f"--seeds must list distinct seeds, e.g. 0,1,2; got {seeds}")
    if not (Path(base) / "config.json").is_file():
        raise CfgrlError(f"--policy '{base}' is not a policy checkpoint (no config.json); give the fixed base policy")
    per_seed, timings = {}, {}
    for seed in seeds:
        timed = Timer()
        setting = with_overrides(cfg, [f"{key}={seed}" for key in SEED_KEYS])
        first, baselines = compare(setting, root / f"seed_{seed}", base, timed)
        per_seed[seed], timings[seed] = seed_row(first, baselines), timed.timings
    report = {"base": str(base), "seeds": seeds, "seed_keys": list(SEED_KEYS), "per_seed": per_seed,
              "summary": spread_summary(per_seed), "timings_s": timings,
              "provenance": provenance.record()}
    root.mkdir(parents=True, exist_ok=True)
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "report.md").write_text(render(report) + "\n")
    print((root / "report.md").read_text())
    return report


def render(report: dict[str, Any]) -> str:
    lines = ["# CFGRL against the baselines over seeds (base fixed)", "",
             f"Seeds of {', '.join(report['seed_keys'])}: {', '.join(map(str, report['seeds']))}; the same test episodes for every "
             "seed; each arm at the w chosen on validation init states (in brackets).", "",
             "| seed | base | CFGRL | filtered BC | weighted | CFGRL − filtered BC, paired | CFGRL − weighted, paired |",
             "|---|---|---|---|---|---|---|"]
    for seed, r in report["per_seed"].items():
        lines.append(f"| {seed} | {r['base']:.1%} | {r['cfgrl']:.1%} (w={r['cfgrl_w']:g}) | {r['filtered_bc']:.1%} | "
                     f"{r['weighted']:.1%} (w={r['weighted_w']:g}) | {format_difference(r['cfgrl_minus']['filtered_bc'])} | "
                     f"{format_difference(r['cfgrl_minus']['weighted'])} |")
    s = report["summary"]
    for stat in ("mean", "std", "min", "max"):
        lines.append(f"| {stat} | " + " | ".join(f"{s[arm][stat]:.1%}" for arm in ARMS) + " | | |")
    return "\n".join(lines)
