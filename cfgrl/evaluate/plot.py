"""The success-versus-guidance-weight figures: one evaluation's ``success_vs_w.png``, and several
evaluations' curves in one figure (the demonstration's ``comparison.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from cfgrl.evaluate.plan import BASELINE, POLICY, TEST, VALIDATION  # noqa: E402
from cfgrl.evaluate.summary import reported_split  # noqa: E402

W_LABEL = "guidance weight w  (0 = unconditional, 1 = conditional)"
LEVEL_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:grey")


def plot_success_vs_w(results: dict[str, Any], path: str | Path) -> Path:
    """Overall test success against w with its 95% band, one thin line per task, the validation
    success as a dotted line, the baseline as a dashed level with its band, and the w chosen on
    validation marked."""
    split = reported_split(results)  # validation for a validation-only run
    rows = [r for r in results["rows"] if r["split"] == split]
    policy = sorted((r for r in rows if r["role"] == POLICY), key=lambda r: r["cfg_scale"])
    overall = [r for r in policy if r["scope"] == "overall"]
    ws = [r["cfg_scale"] for r in overall]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    tasks = dict.fromkeys((r["suite"], r["task_id"]) for r in policy if r["scope"] == "task")
    for i, (suite, task_id) in enumerate(tasks):
        per_task = [r for r in policy if r["scope"] == "task" and r["suite"] == suite and r["task_id"] == task_id]
        ax.plot([r["cfg_scale"] for r in per_task], [r["success_rate"] for r in per_task],
                lw=0.8, alpha=0.45, color="grey", label="per task" if i == 0 else None)
    ax.fill_between(ws, [r["ci_low"] for r in overall], [r["ci_high"] for r in overall],
                    color="tab:blue", alpha=0.2, label="overall 95% Wilson band")
    rates = [r["success_rate"] for r in overall]
    below = [max(0.0, p - r["ci_low"]) for p, r in zip(rates, overall)]  # max: rounding at 0/n and n/n
    above = [max(0.0, r["ci_high"] - p) for p, r in zip(rates, overall)]
    ax.errorbar(ws, rates, yerr=[below, above], fmt="o-", color="tab:blue", lw=2, capsize=3, label=f"overall ({split})")
    validation = sorted((r for r in results["rows"] if r["split"] == VALIDATION and r["scope"] == "overall"), key=lambda r: r["cfg_scale"])
    if validation and split == TEST:
        ax.plot([r["cfg_scale"] for r in validation], [r["success_rate"] for r in validation], "s:", color="tab:orange",
                lw=1.2, label="overall (validation)")
    base = [r for r in rows if r["role"] == BASELINE and r["scope"] == "overall"]
    if base:
        _level(ax, base[0], "baseline checkpoint", LEVEL_COLOURS[0])
    chosen = results.get("chosen_cfg_scale")
    if chosen is not None:
        ax.axvline(chosen, color="tab:green", ls=":", lw=1.2, label=f"w = {chosen:g}, chosen on validation")
    n = overall[0]["episodes"] if overall else 0
    ax.set_xticks(ws)
    return _save(fig, ax, f"Success vs guidance weight ({n} paired {split} episodes per w)", path)


def plot_curves(curves: dict[str, list[dict[str, Any]]], levels: dict[str, dict[str, Any]], title: str, path: str | Path) -> Path:
    """Overall success against w for several arms, each with its 95% band (``curves``: label ->
    overall rows, one per w), and arms without a w as dashed levels (``levels``: label -> row)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["cfg_scale"])
        ws = [r["cfg_scale"] for r in rows]
        line, = ax.plot(ws, [r["success_rate"] for r in rows], "o-", lw=2, label=label)
        ax.fill_between(ws, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=line.get_color(), alpha=0.15)
    for i, (label, row) in enumerate(levels.items()):
        _level(ax, row, label, LEVEL_COLOURS[i % len(LEVEL_COLOURS)])
    return _save(fig, ax, title, path)


def _level(ax, row: dict[str, Any], label: str, colour: str) -> None:
    ax.axhline(row["success_rate"], color=colour, ls="--", lw=1.2, label=label)
    ax.axhspan(row["ci_low"], row["ci_high"], color=colour, alpha=0.08)


def _save(fig, ax, title: str, path: str | Path) -> Path:
    ax.set(xlabel=W_LABEL, ylabel="success rate", ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
