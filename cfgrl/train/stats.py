"""Normalisation statistics of state and action, streamed from the stores, and the mismatch report.

A fine-tuned checkpoint keeps its own statistics by default: its action space must not shift under
it. ``train.stats=store`` (or a fresh model, or a checkpoint that carries none) recomputes them here,
over the steps a training window can hold: each committed episode's policy steps. LIBERO's wait steps
are recorded with the "do nothing" action but no window starts in them (``cfgrl.label.windows``), so
they are left out.

mean_std: read in blocks (sums in float64), so the stores never need to fit in memory. quantile
(q01, q99): exact, ``np.quantile`` with linear interpolation over every kept step, no sketch, so no
approximation error; it holds one array's kept steps in memory as float32 (4 bytes per dimension
and step: 32 MB per million steps of an 8-d state), a small fraction of the image bytes.
"""

from __future__ import annotations

import numpy as np

from cfgrl.policy import NormStats
from cfgrl.policy.normalize import FIELDS
from cfgrl.store import Store

STEP_BLOCK = 1 << 16


def policy_steps(store: Store) -> np.ndarray:
    """(num_steps,) bool: the steps of an episode past its wait steps, the only ones a window holds."""
    ep = store.episodes
    edges = np.zeros(store.num_steps + 1, np.int64)
    np.add.at(edges, (ep.step_start + ep.num_wait_steps).to_numpy(), 1)
    np.add.at(edges, (ep.step_start + ep.length).to_numpy(), -1)
    return np.cumsum(edges[:-1]) > 0


def _kept_blocks(stores: list[Store], name: str):
    """The kept steps of array ``name`` (policy_steps) of every store, in blocks of float64 rows."""
    for store in stores:
        n, keep = store.num_steps, policy_steps(store)
        for lo in range(0, n, STEP_BLOCK):  # a damaged chunk: one line naming it
            yield store.block(f"steps/{name}", lo, min(n, lo + STEP_BLOCK)).astype(np.float64)[keep[lo : lo + STEP_BLOCK]]


def _float32(values: np.ndarray) -> np.ndarray:
    # Rounded to float32, the precision they are applied in: the order the episodes were stored in
    # moves the float64 sums in their last bits, and must change neither the stats nor the policy id.
    return values.astype(np.float32).astype(np.float64)


def _moments(stores: list[Store], name: str) -> dict[str, np.ndarray]:
    total, sq, count = 0.0, 0.0, 0
    for block in _kept_blocks(stores, name):
        total = total + block.sum(0)
        sq = sq + (block**2).sum(0)
        count += len(block)
    mean = total / count
    std = NormStats.safe_std(np.sqrt(np.maximum(sq / count - mean**2, 0.0)))  # a (near-)constant dimension is left unscaled
    return {"mean": _float32(mean), "std": _float32(std)}


def _quantiles(stores: list[Store], name: str) -> dict[str, np.ndarray]:
    kept = np.concatenate([block.astype(np.float32) for block in _kept_blocks(stores, name)])
    q01, q99 = np.quantile(kept, [0.01, 0.99], axis=0)  # of the sorted values: independent of the store order
    return {"q01": _float32(q01), "q99": _float32(q99)}


def store_stats(stores: list[Store], kind: str = "mean_std") -> NormStats:
    """The stores' stats of ``kind`` (mean_std | quantile); a constant dimension under quantile is a CfgrlError."""
    compute = _quantiles if kind == "quantile" else _moments
    values = {f"{name}_{stat}": v for name in ("state", "action") for stat, v in compute(stores, name).items()}
    return NormStats(kind=kind, **values)


def mismatch_report(checkpoint: NormStats, store: NormStats, rtol: float = 0.1) -> list[str]:
    """One line per statistic whose checkpoint and store values differ, with both values.

    Compared on the checkpoint's own scale (its std, or half its q01..q99 range): a shift of a tenth
    of it is reported. Both are of one kind: the store's are computed in the checkpoint's."""
    assert checkpoint.kind == store.kind, (checkpoint.kind, store.kind)
    lines = []
    for name in ("state", "action"):
        _, scale = checkpoint.affine(name)
        for stat in FIELDS[checkpoint.kind]:
            ours, theirs = getattr(checkpoint, f"{name}_{stat}"), getattr(store, f"{name}_{stat}")
            if ours.shape != theirs.shape:
                lines.append(f"{name}: checkpoint has {ours.shape[0]} dims, the stores have {theirs.shape[0]}")
                break
            if np.any(np.abs(ours - theirs) > rtol * scale):
                lines.append(f"{name}_{stat}: checkpoint {_fmt(ours)} vs stores {_fmt(theirs)}")
    return lines


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=np.float64)) + "]"
