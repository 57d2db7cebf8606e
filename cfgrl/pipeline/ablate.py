"""`cfgrl ablate`: the design note's ablations on one store, one factor at a time.

Every setting relabels the same store (no re-collection), fine-tunes the same starting policy and
sweeps w. The table has one row per setting: the w chosen on validation init states, the overall
test success at that w with its Wilson interval, its paired difference against the defaults (both
at their chosen w, on the same test episodes: ``evaluate.compare``), and the test success at w = 1
(no guidance) for reference.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cfgrl import atomic, provenance
from cfgrl.config import Config, parse_override, with_overrides
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.compare import compare_evaluations
from cfgrl.evaluate.plan import require_validation
from cfgrl.evaluate.summary import chosen_cfg_scale, overall_rows
from cfgrl.pipeline import stages

DEFAULT_GRID: dict[str, list[Any]] = {
    "cfgrl.dropout_prob": [0.0, 0.05, 0.1, 0.2],
    "cfgrl.label_source": ["episode_rloo", "window_rloo", "window_return"],
    "cfgrl.label_scheme": ["binary", "ternary"],
    "policy.condition_mode": ["token", "bias", "concat"],
    "cfgrl.use_prefix_dropout": [False, True],
}
TABLE_COLUMNS = ["setting", "factor", "value", "chosen_cfg_scale", "success", "ci_low", "ci_high",
                 "success_w1", "diff_vs_default", "diff_ci_low", "diff_ci_high", "label_version", "policy"]


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``--grid cfgrl.dropout_prob=0,0.2`` (repeatable) replaces the default grid."""
    if not items:
        return DEFAULT_GRID
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        values = [parse_override(f"{key}={v}")[1] for v in raw.split(",") if v.strip()]
        if not values:
            raise CfgrlError(f"--grid '{item}' lists no value; e.g. --grid cfgrl.dropout_prob=0,0.1,0.2")
        grid[key.strip()] = values
    return grid


def settings(cfg: Config, grid: dict[str, list[Any]]) -> list[tuple[str, Any]]:
    """The defaults first, then each factor's other values, one factor changed at a time."""
    out: list[tuple[str, Any]] = [("default", None)]
    for key, values in grid.items():
        with_overrides(cfg, [f"{key}={values[0]}"])  # an unknown key or bad value fails before any work
        section, leaf = key.split(".")
        default = getattr(getattr(cfg, section), leaf)
        out += [(key, v) for v in values if v != default]
    return out


def _slug(factor: str, value: Any) -> str:
    return "default" if factor == "default" else re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{factor}={value}")


def run_ablation(cfg: Config, store: Path, policy: Path, out: Path, grid: dict[str, list[Any]]) -> pd.DataFrame:
    require_validation(cfg, "cfgrl ablate")
    rows, default_eval = [], out / "default" / "eval"
    for factor, value in settings(cfg, grid):
        slug = _slug(factor, value)
        setting = cfg if factor == "default" else with_overrides(cfg, [f"{factor}={value}"])
        print(f"ablate: {slug}")
        labels = stages.label(setting, [store], out / "labels", policy)
        trained = stages.train(setting, [store], labels, out / slug / "train", policy)
        results = stages.evaluate(setting, trained, out / slug / "eval")
        overall = {r["cfg_scale"]: r for r in overall_rows(results, role="policy")}
        chosen = overall[chosen_cfg_scale(results, "cfgrl ablate")]
        # each setting against the defaults, both at their chosen w, on the same test episodes
        if factor == "default":  # settings() puts it first
            default_w = chosen["cfg_scale"]
        d = None if factor == "default" else compare_evaluations(out / slug / "eval", default_eval, chosen["cfg_scale"], default_w).difference
        vs_default = {} if d is None else {"diff_vs_default": d.diff, "diff_ci_low": d.low, "diff_ci_high": d.high}
        rows.append({
            "setting": slug, "factor": factor, "value": value,
            "chosen_cfg_scale": chosen["cfg_scale"], "success": chosen["success_rate"],
            "ci_low": chosen["ci_low"], "ci_high": chosen["ci_high"],
            "success_w1": overall[1.0]["success_rate"] if 1.0 in overall else None,
            **vs_default,
            "label_version": labels.name, "policy": str(trained),
        })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ablation.csv", index=False)
    atomic.write_text(out / "provenance.json", json.dumps(provenance.record(), indent=2) + "\n")
    (out / "ablation.md").write_text(to_markdown(table) + "\n")
    plot_ablation(table, out / "ablation.png")
    print(to_markdown(table))
    print(f"ablate: table {out / 'ablation.csv'}, plot {out / 'ablation.png'}")
    return table


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| setting | w (chosen on validation) | test success at that w (95% CI) | minus default, paired (95% CI) | test success at w=1 |",
             "|---|---|---|---|---|"]
    for r in table.itertuples():
        w1 = "" if r.success_w1 is None or pd.isna(r.success_w1) else f"{r.success_w1:.1%}"
        diff = "" if pd.isna(r.diff_vs_default) else \
            f"{r.diff_vs_default:+.1%} ({r.diff_ci_low:+.1%}, {r.diff_ci_high:+.1%})"
        lines.append(f"| {r.setting} | {r.chosen_cfg_scale:g} | {r.success:.1%} ({r.ci_low:.1%}-{r.ci_high:.1%}) | {diff} | {w1} |")
    return "\n".join(lines)


def plot_ablation(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(table) + 2), 4))
    x = range(len(table))
    err = [table.success - table.ci_low, table.ci_high - table.success]
    ax.bar(x, table.success, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    for i, r in enumerate(table.itertuples()):
        ax.text(i, r.ci_high + 0.02, f"w={r.chosen_cfg_scale:g}", ha="center", fontsize=8)
    ax.set_xticks(list(x), table.setting, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("test success (95% CI)\nat the w chosen on validation")
    ax.set_ylim(0, 1.1)
    ax.set_title("CFGRL ablations (one factor at a time)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
