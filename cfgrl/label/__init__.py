"""The label stage: window advantages -> optimality labels o in {1, 0, ∅} -> condition dropout ->
a versioned parquet label index.

```python
from cfgrl.label import load_label_index, condition_dropout
idx = load_label_index("data/builtin/reach.zarr")     # newest version; or "STORE@VERSION_OR_NAME"
labels, hit = condition_dropout(idx.windows.raw_label, 0.1, np.random.default_rng(epoch))
```
"""

from cfgrl.label.advantage import default_threshold, episode_rloo, rloo_advantage, window_return, window_rloo
from cfgrl.label.index import LabelIndex, labels_dir, list_versions, load_label_index, make_label_index
from cfgrl.label.labels import binary_labels, condition_dropout, ternary_labels
from cfgrl.label.windows import HORIZON

__all__ = [
    "HORIZON",
    "LabelIndex",
    "binary_labels",
    "condition_dropout",
    "default_threshold",
    "episode_rloo",
    "labels_dir",
    "list_versions",
    "load_label_index",
    "make_label_index",
    "rloo_advantage",
    "ternary_labels",
    "window_return",
    "window_rloo",
]
