"""Normalisation statistics of state and action, streamed from the stores, and the mismatch report.

A fine-tuned checkpoint keeps its own statistics by default: its action space must not shift under
it. ``train.stats=store`` (or a fresh model, or a checkpoint that carries none) recomputes them here,
over the steps a training window can hold: each committed episode's policy steps. LIBERO's wait steps
are recorded with the "do nothing" action but no window starts in them (``cfgrl.label.windows``), so
they are left out. Read in blocks (sums in float64), so the stores never need to fit in memory.
"""

from __future__ import annotations

import numpy as np

from cfgrl.policy import NormStats
from cfgrl.store import Store

STEP_BLOCK = 1 << 16


def policy_steps(store: Store) -> np.ndarray:
    """(num_steps,) bool: the steps of an episode past its wait steps, the only ones a window holds."""
    ep = store.episodes
    edges = np.zeros(store.num_steps + 1, np.int64)
    np.add.at(edges, (ep.step_start + ep.num_wait_steps).to_numpy(), 1)
    np.add.at(edges, (ep.step_start + ep.length).to_numpy(), -1)
    return np.cumsum(edges[:-1]) > 0


def _moments(stores: list[Store], name: str) -> tuple[np.ndarray, np.ndarray]:
    total, sq, count = 0.0, 0.0, 0
    for store in stores:
        array, n, keep = store.steps(name), store.num_steps, policy_steps(store)
        for lo in range(0, n, STEP_BLOCK):
            block = np.asarray(array[lo : min(n, lo + STEP_BLOCK)], dtype=np.float64)[keep[lo : lo + STEP_BLOCK]]
            total = total + block.sum(0)
            sq = sq + (block**2).sum(0)
            count += len(block)
    mean = total / count
    std = NormStats.safe_std(np.sqrt(np.maximum(sq / count - mean**2, 0.0)))  # a (near-)constant dimension is left unscaled
    # Rounded to float32, the precision they are applied in: the order the episodes were stored in
    # moves the float64 sums in their last bits, and must change neither the stats nor the policy id.
    return mean.astype(np.float32).astype(np.float64), std.astype(np.float32).astype(np.float64)


def store_stats(stores: list[Store]) -> NormStats:
    state_mean, state_std = _moments(stores, "state")
    action_mean, action_std = _moments(stores, "action")
    return NormStats(state_mean, state_std, action_mean, action_std)


def mismatch_report(checkpoint: NormStats, store: NormStats, rtol: float = 0.1) -> list[str]:
    """One line per statistic whose checkpoint and store values differ, with both values.

    Compared on the scale of the checkpoint's std: a shift of a tenth of a std is reported."""
    lines = []
    for name in ("state", "action"):
        mean_c, std_c = getattr(checkpoint, f"{name}_mean"), getattr(checkpoint, f"{name}_std")
        mean_s, std_s = getattr(store, f"{name}_mean"), getattr(store, f"{name}_std")
        if mean_c.shape != mean_s.shape:
            lines.append(f"{name}: checkpoint has {mean_c.shape[0]} dims, the stores have {mean_s.shape[0]}")
            continue
        scale = NormStats.safe_std(std_c)
        if np.any(np.abs(mean_c - mean_s) > rtol * scale):
            lines.append(f"{name}_mean: checkpoint {_fmt(mean_c)} vs stores {_fmt(mean_s)}")
        if np.any(np.abs(std_c - std_s) > rtol * scale):
            lines.append(f"{name}_std: checkpoint {_fmt(std_c)} vs stores {_fmt(std_s)}")
    return lines


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=np.float64)) + "]"
