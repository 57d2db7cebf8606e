"""The success-versus-guidance-weight figure of an evaluation (``success_vs_w.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from cfgrl.evaluate.plan import BASELINE, POLICY  # noqa: E402


def plot_success_vs_w(results: dict[str, Any], path: str | Path) -> Path:
    """Overall success against w with its 95% band, one thin line per task, the baseline as a
    dashed level with its band, and the best w marked."""
    rows = results["rows"]
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
    ax.errorbar(ws, rates, yerr=[below, above], fmt="o-", color="tab:blue", lw=2, capsize=3, label="overall")
    base = [r for r in rows if r["role"] == BASELINE and r["scope"] == "overall"]
    if base:
        b = base[0]
        ax.axhline(b["success_rate"], color="tab:red", ls="--", lw=1.2, label="baseline checkpoint")
        ax.axhspan(b["ci_low"], b["ci_high"], color="tab:red", alpha=0.08)
    best = results.get("best_cfg_scale")
    if best is not None:
        ax.axvline(best, color="tab:green", ls=":", lw=1.2, label=f"best w = {best:g}")
    n = overall[0]["episodes"] if overall else 0
    ax.set(xlabel="guidance weight w  (0 = unconditional, 1 = conditional)", ylabel="success rate",
           ylim=(-0.02, 1.02), title=f"Success vs guidance weight ({n} paired episodes per w)")
    ax.set_xticks(ws)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
