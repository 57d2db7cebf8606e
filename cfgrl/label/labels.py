"""The CFGRL labels: an optimality condition o per window, and condition dropout.

CFGRL trains one conditional flow policy on every window, each conditioned on its own label
``o`` (Frans et al. 2025): ``o = 1`` (the action chunk is better than the group's baseline),
``o = 0`` (worse; ternary scheme only) or ``o = ∅`` (nothing injected: the unconditional path).
Condition dropout turns a share ``p`` of the conditioned labels into ∅ so that the unconditional
model is trained on all data; guidance then mixes the two, ``v = v_∅ + w (v_1 - v_∅)``.

Labels are pandas nullable ``Int8`` arrays: 1, 0, or ``<NA>`` for ∅ (the stored encoding; in code a
label is a ``cfgrl.optimality.Label``, converted by ``cfgrl.optimality.from_stored``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cfgrl.optimality import Label


def _labels(values: np.ndarray, is_null: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int8), is_null.astype(bool))


def binary_labels(advantage: np.ndarray, threshold: float) -> pd.arrays.IntegerArray:
    """o = 1 if A >= threshold else ∅ (a NaN advantage is ∅)."""
    advantage = np.asarray(advantage, dtype=np.float64)
    optimal = advantage >= threshold  # NaN compares False
    return _labels(np.full(len(advantage), int(Label.OPTIMAL)), ~optimal)


def ternary_labels(advantage: np.ndarray, threshold: float) -> pd.arrays.IntegerArray:
    """The paper's three classes: o = 1 if A >= threshold, o = 0 if A < threshold, ∅ if A is NaN."""
    advantage = np.asarray(advantage, dtype=np.float64)
    optimal = advantage >= threshold
    return _labels(np.where(optimal, int(Label.OPTIMAL), int(Label.NOT_OPTIMAL)), np.isnan(advantage))


def condition_dropout(labels, p: float, rng: np.random.Generator) -> tuple[pd.arrays.IntegerArray, np.ndarray]:
    """Replace each conditioned label (1 or 0) by ∅ with probability ``p``.

    One uniform number is drawn for every row, conditioned or not, so row ``i``'s draw depends only
    on the generator's seed and ``i``: the same seed reproduces the same hits, and a trainer can
    redraw per epoch from ``raw_label`` with a new generator. Returns (final labels, dropout_hit).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    raw = pd.array(labels, dtype="Int8")
    conditioned = ~np.asarray(raw.isna())
    hit = conditioned & (rng.random(len(raw)) < p)
    values = raw.to_numpy(dtype=np.int8, na_value=0)
    return _labels(values, ~conditioned | hit), hit
