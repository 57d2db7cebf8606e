"""How a store's episodes say they are demonstrations (``cfgrl import``), read by labelling and export.

An imported episode is one group of one rollout (no RLOO baseline) whose ``policy_id`` is
``DEMONSTRATION``: no policy of cfgrl's has that id (theirs are content hashes or ``scripted:NOISE``),
so the mark needs no schema change. ``cfgrl.demonstrations`` says how ``label`` treats them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEMONSTRATION = "demonstration"
TREATMENTS = ("optimal", "unconditional")  # cfgrl.demonstrations: a successful one's windows o = 1, or ∅


def is_demonstration(episodes: pd.DataFrame) -> np.ndarray:
    """(E,) bool: which episodes of a store's episode table are imported demonstrations."""
    return episodes["policy_id"].to_numpy(str) == DEMONSTRATION
