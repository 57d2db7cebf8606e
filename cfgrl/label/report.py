"""What `cfgrl label` prints and saves: label shares per task and overall, the dropout hit rate,
and a histogram of the window advantages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cfgrl.label.advantage import GROUP_RELATIVE


def _share_line(title: str, windows: int, share: dict[str, float]) -> str:
    return f"  {title:<10} {windows:>9}  o=1 {share['1']:6.1%}  o=0 {share['0']:6.1%}  o=∅ {share['null']:6.1%}"


def threshold_text(s: dict[str, Any]) -> str:
    """``threshold T``, ``quantile Q per task`` or ``threshold n/a`` (versions older than label_quantile have no key)."""
    if s.get("label_quantile") is not None:
        return f"quantile {s['label_quantile']:g} per task"
    return "threshold n/a" if s["label_threshold"] is None else f"threshold {s['label_threshold']:g}"


def summary_text(manifest: dict[str, Any]) -> str:
    s, c = manifest["settings"], manifest["counts"]
    value = f", value model {s['value_model']}, N {s['value_horizon']}" if s.get("value_model") else ""
    lines = [
        f"label index {manifest['version']}  ({s['label_source']}{value}, {s['label_scheme']}, {threshold_text(s)}, "
        f"dropout {s['dropout_prob']:g}, seed {s['seed']}, windows of {s['horizon']} actions, stride {s['window_stride']}, "
        f"zero-variance groups: {s['zero_variance_groups'] or 'n/a'})",
        f"  {c['episodes']} episodes in {c['groups']} groups ({c['zero_variance_groups']} with one outcome); "
        f"{c['windows']} windows ({c['windows_before_drop'] - c['windows']} dropped)",
        *_single_rollout_lines(s, c),
        "  final labels after condition dropout:",
        f"  {'task':<10} {'windows':>9}",
    ]
    for task, row in c["label_share_per_task"].items():
        lines.append(_share_line(f"task {task}", row["windows"], row))
    lines.append(_share_line("overall", c["windows"], c["label_share"]))
    if "threshold_per_task" in c:
        lines.append("  threshold per task: " + ", ".join(f"task {t} {v:.4g}" for t, v in c["threshold_per_task"].items()))
    lines.append(
        f"  dropout hit rate among conditioned labels: {c['dropout_hit_rate']:.2%} "
        f"({c['dropout_hits']} of {c['conditioned']})"
    )
    if c["advantage"] is not None:
        a = c["advantage"]
        lines.append(f"  advantage: min {a['min']:.4g}  mean {a['mean']:.4g}  max {a['max']:.4g}")
    return "\n".join(lines)


def _single_rollout_lines(s: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """How many windows came from groups of one rollout (evaluation-like groups) and what they became."""
    if not c["single_rollout_groups"]:
        return []
    if s["label_source"] in GROUP_RELATIVE:
        how = f"no leave-one-out baseline: treated as zero-variance groups ({s['zero_variance_groups']})"
    else:
        how = f"{s['label_source']} needs no baseline"
    b = c["single_rollout_labels"]
    return [
        f"  groups of one rollout: {c['single_rollout_groups']} ({how}); their {c['single_rollout_windows']} windows: "
        f"raw o=1 {b['1']}, o=0 {b['0']}, o=∅ {b['null']}, dropped {b['dropped']}"
    ]


def write_histogram(advantage: np.ndarray, manifest: dict[str, Any], path: Path) -> None:
    """A PNG histogram of A_w with the threshold marked (an empty note for label_source none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = manifest["settings"]
    values = advantage[~np.isnan(advantage)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)  # fixed margins: tight_layout draws twice
    if len(values):
        counts, edges = np.histogram(values, bins=50)
        ax.stairs(counts, edges, fill=True, alpha=0.7)
        if settings["label_threshold"] is not None:
            ax.axvline(settings["label_threshold"], color="crimson", linestyle="--", label="threshold")
            ax.legend()
        ax.set_xlabel("window advantage A_w")
        ax.set_ylabel("windows")
    else:
        ax.text(0.5, 0.5, "no advantage (label_source none)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title(f"{settings['label_source']} - version {manifest['version']}")
    fig.savefig(path, dpi=80)
    plt.close(fig)
