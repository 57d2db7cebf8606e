"""``meta/stats.json`` as lerobot 0.6.1 writes it: per feature mean, std, min, max, count and the
quantiles q01, q10, q50, q90, q99 (π0.5 normalises by q01 and q99). Images are per channel, in
[0, 1], shaped (3, 1, 1) as lerobot's; their statistics come from an even sample of frames."""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_SAMPLE = 2000  # frames per camera: the per-channel statistics settle long before


def vector_stats(values: np.ndarray) -> dict[str, Any]:
    """Statistics of (N, ...) values over the first axis, as JSON lists."""
    x = np.asarray(values, np.float64).reshape(len(values), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({f"q{round(q * 100):02d}": np.quantile(x, q, axis=0) for q in QUANTILES})
    shape = np.asarray(values).shape[1:] or (1,)
    stats = {k: v.reshape(shape).tolist() for k, v in out.items()}
    stats["count"] = [len(values)]
    return stats


def image_stats(frames: np.ndarray) -> dict[str, Any]:
    """(N, H, W, 3) uint8 frames -> per-channel statistics in [0, 1], each shaped (3, 1, 1)."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    out = {"min": pixels.min(0), "max": pixels.max(0), "mean": pixels.mean(0), "std": pixels.std(0)}
    out.update({f"q{round(q * 100):02d}": np.quantile(pixels, q, axis=0) for q in QUANTILES})
    stats = {k: v.reshape(3, 1, 1).tolist() for k, v in out.items()}
    stats["count"] = [len(frames)]
    return stats


def sample_rows(total: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(total, IMAGE_SAMPLE)).astype(np.int64)) if total else np.zeros(0, np.int64)
