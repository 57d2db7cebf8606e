"""The label stage: window advantages -> optimality labels o in {1, 0, ∅} -> condition dropout ->
a versioned parquet label index.

```python
from cfgrl.label import load_label_index, condition_dropout
idx = load_label_index("data/builtin/reach.zarr")     # newest version; or "STORE@VERSION_OR_NAME"
labels, hit = condition_dropout(idx.windows.raw_label, 0.1, np.random.default_rng(epoch))
```
"""

from typing import Any

# Imported lazily (numpy/pandas/zarr): `cfgrl.cli` imports this package's command module, and every
# spawned collector worker re-imports `cfgrl.cli`.
_EXPORTS = {
    "default_threshold": "advantage", "episode_rloo": "advantage", "rloo_advantage": "advantage",
    "window_return": "advantage", "window_rloo": "advantage",
    "LabelIndex": "index", "labels_dir": "index", "list_versions": "index", "load_label_index": "index",
    "make_label_index": "index",
    "binary_labels": "labels", "condition_dropout": "labels", "ternary_labels": "labels",
    "DEFAULT_HORIZON": "windows",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"cfgrl.label.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cfgrl.label' has no attribute {name!r}")


__all__ = [
    "DEFAULT_HORIZON",
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
