"""The CFGRL optimality label o: its one encoding in code, and the one conversion from the stored one.

In code a label is a ``Label`` (an int: 1 = optimal, 0 = not optimal, -1 = ∅, nothing injected).
The label index stores labels as pandas nullable ``Int8`` with ``<NA>`` for ∅; ``from_stored`` is
the only place that turns one into the other.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Label(IntEnum):
    OPTIMAL = 1
    NOT_OPTIMAL = 0
    NULL = -1  # ∅: the unconditional label, no condition parameter is used

    @property
    def key(self) -> str:
        """The label in metric and report names: "1", "0", "null"."""
        return "null" if self is Label.NULL else str(int(self))


def from_stored(labels) -> np.ndarray:
    """Stored labels (nullable Int8: 1 / 0 / <NA>, any array-like pandas accepts) -> int64 ``Label`` codes."""
    import pandas as pd

    return pd.array(labels, dtype="Int64").fillna(int(Label.NULL)).to_numpy(dtype=np.int64)
