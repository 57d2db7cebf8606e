"""PI0 and π0.5 policies with a true unconditional path and classifier-free guided sampling.

Modules, top-down:
  policy.py         PI0Policy: raw observations/actions, prompts, normalisation, labels o, losses, guided sampling
  model.py          what both families share: prefix, flow matching, labels, cached guided Euler sampler
  model_pi0.py      PI0Model: PI0's suffix (state token, action-time MLP)
  model_pi05.py     PI05Model: π0.5's suffix (action tokens; the time conditions the expert's adaptive norms)
  condition.py      the CFGRL condition (token | bias | concat); ∅ samples inject nothing
  backbone.py       SigLIP + Gemma prefix LM + Gemma action expert with one joint attention per layer
  config.py         PI0Config and the presets (pi0 / mini / small / tiny, pi05 / pi05_mini / pi05_small / pi05_tiny)
  images.py, tokenizer.py, normalize.py   input preparation (π0.5's prompt), normalisation stats
  checkpoint.py     our checkpoint format, read; loading any layout (the names importers use)
  save.py, export.py   our format written; lerobot's written (`cfgrl export`)
  lerobot_format.py, openpi_format.py   lerobot's and openpi's layouts mapped and read
  checkpoint_files.py, materialise.py   safetensors read safely, directories written whole; a policy from read tensors
  cli.py            `cfgrl export`

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
    "PI0Model": "cfgrl.policy.model_pi0",
    "PI05Model": "cfgrl.policy.model_pi05",
    "ModelInputs": "cfgrl.policy.model",
    "export_lerobot": "cfgrl.policy.checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cfgrl.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
