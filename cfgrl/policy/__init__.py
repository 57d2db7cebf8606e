"""PI0 policy with a true unconditional path and classifier-free guided sampling.

Public names are imported lazily so that ``import cfgrl.policy`` (and the CLI) stays fast for users
who never build a model: torch and transformers load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PI0Config": "cfgrl.policy.config",
    "PRESETS": "cfgrl.policy.config",
    "NormStats": "cfgrl.policy.normalize",
    "PI0Policy": "cfgrl.policy.policy",
    "PI0Model": "cfgrl.policy.model",
    "export_lerobot": "cfgrl.policy.checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cfgrl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
