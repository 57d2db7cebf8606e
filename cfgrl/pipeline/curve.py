"""`cfgrl curve`: validation success against training steps, from the checkpoints a run kept.

A recipe is chosen on validation episodes; the test episodes stay unseen until it is reported once.
Every finished checkpoint of a run (``train.keep_every`` keeps them: RUN/checkpoints/step_N) is
evaluated on the validation episodes alone (``evaluate.validation_only``) at every w of
``evaluate.cfg_scales``, into OUT/step_N (resumable: a rerun reuses every finished episode).
OUT/curve.csv holds one row per (step, w); OUT/curve.png draws validation success against the step,
one line per w with its 95% band, so both whether an arm is still learning and which branch
falls short (w = 0 is the ∅ branch alone, w = 1 the o = 1 branch alone) show in one figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cfgrl import atomic, provenance
from cfgrl.config import Config, with_overrides
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import POLICY, VALIDATION
from cfgrl.evaluate.summary import overall_rows
from cfgrl.pipeline import stages
from cfgrl.train.checkpoint import finished_checkpoints

COLUMNS = ["step", "cfg_scale", "episodes", "successes", "success_rate", "ci_low", "ci_high", "checkpoint"]


def run_curve(cfg: Config, run_dir: Path, out: Path, every: int = 1) -> pd.DataFrame:
    """Evaluate every ``every``-th kept checkpoint of ``run_dir`` on validation; write the table and the figure."""
    if every < 1:
        raise CfgrlError(f"--every must be at least 1 (every kept checkpoint), got {every}")
    kept = finished_checkpoints(run_dir)[::-1][::every][::-1]  # the newest always in
    if not kept:
        raise CfgrlError(f"'{run_dir}' holds no finished checkpoint (RUN/checkpoints/step_N); train with "
                         "train.keep_every=N to keep checkpoints along the run")
    setting = with_overrides(cfg, ["evaluate.validation_only=true"])
    rows = []
    for step, checkpoint in kept:
        print(f"curve: step {step} ({checkpoint})")
        results = stages.evaluate(setting, checkpoint, out / f"step_{step}")
        rows += [{"step": step, **{k: r[k] for k in COLUMNS[1:-1]}, "checkpoint": str(checkpoint)}
                 for r in overall_rows(results, VALIDATION, POLICY)]
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["cfg_scale", "step"], kind="stable")
    atomic.write_text(out / "curve.csv", table.to_csv(index=False))
    atomic.write_text(out / "provenance.json", json.dumps(provenance.record(), indent=2) + "\n")
    plot_curve(table, out / "curve.png", run_dir)
    print(f"curve: table {out / 'curve.csv'}, plot {out / 'curve.png'}")
    return table


def plot_curve(table: pd.DataFrame, path: Path, run_dir: Path) -> Path:
    """Validation success against the training step, one line per w with its 95% Wilson band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for w, rows in table.groupby("cfg_scale", sort=True):
        line, = ax.plot(rows.step, rows.success_rate, "o-", lw=1.6, label=f"w = {w:g}")
        ax.fill_between(rows.step, rows.ci_low, rows.ci_high, color=line.get_color(), alpha=0.15)
    n = int(table.episodes.iloc[0])
    ax.set(xlabel="training step", ylabel="validation success", ylim=(0, 1),
           title=f"{run_dir.name}: validation success along training ({n} episodes per point)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
