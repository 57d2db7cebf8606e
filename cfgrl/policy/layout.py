"""What a policy directory is, read from its config.json and its weights' key names, never its tensors.

Layouts read (all through ``PI0Policy.from_pretrained``):
  cfgrl    config.json {"schema": "cfgrl.policy", ...} (checkpoint.py)
  lerobot  config.json {"type": "pi0" | "pi05", ...}, weights under ``model.`` (lerobot_format.py)
  openpi   config.json holding only action_dim, action_horizon, paligemma_variant,
           action_expert_variant, precision, as openpi's convert_jax_model_to_pytorch.py writes it;
           weights without the ``model.`` prefix; stats in assets/<asset_id>/norm_stats.json (openpi_format.py)
The family (π0 or π0.5) of a converted checkpoint is told by its weights, never by its directory's
name: π0 has ``state_proj`` and ``action_time_mlp_*``, π0.5 ``time_mlp_*`` and adaptive norms
(``…layernorm.dense``, ``norm.dense``). Cheap enough for `cfgrl label` and `cfgrl inspect`: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from cfgrl.errors import CfgrlError
from cfgrl.schemas import POLICY

LEGACY_FORMAT = "cfgrl-pi0-policy"  # what config.json said instead of a schema name, at schema version 1
OPENPI_CONFIG_KEYS = frozenset({"action_dim", "action_horizon", "paligemma_variant", "action_expert_variant", "precision"})
PI0_MARKERS = ("state_proj.", "action_time_mlp_in.", "action_time_mlp_out.")
PI05_MARKERS = ("time_mlp_in.", "time_mlp_out.")
LEROBOT_DEFAULT_CHUNK = 50  # lerobot's pi0/pi05 chunk_size when its config.json omits it


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CfgrlError(f"{directory} is not a policy checkpoint (no config.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CfgrlError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise CfgrlError(f"{path} is not a policy checkpoint's config (a JSON object); give a cfgrl, lerobot or openpi checkpoint")
    return meta


def layout_of(meta: Any) -> str | None:
    """"cfgrl", "lerobot" or "openpi" for a config.json that ``load_policy`` reads, else None."""
    if not isinstance(meta, dict):
        return None
    if meta.get("schema") == POLICY.name or meta.get("format") == LEGACY_FORMAT:
        return "cfgrl"
    if meta.get("type") in ("pi0", "pi05"):
        return "lerobot"
    if "action_horizon" in meta and set(meta) <= OPENPI_CONFIG_KEYS:
        return "openpi"
    return None


def known_layout(meta: Any, directory: Path) -> str:
    """``layout_of(meta)``, or one line saying the directory is no checkpoint cfgrl reads."""
    kind = layout_of(meta)
    if kind is None:
        raise CfgrlError(f"{directory} is neither a cfgrl policy nor a lerobot pi0 / pi05 or openpi checkpoint "
                         "(config.json has no known format)")
    return kind


def weight_keys(directory: Path) -> list[str]:
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CfgrlError(f"{path} is missing; copy the whole checkpoint directory again")
    try:
        with safe_open(str(path), "np") as weights:
            return list(weights.keys())
    except Exception as exc:  # safetensors raises its own error types, and OSError
        raise CfgrlError(f"{path} is not a readable safetensors file ({exc}); copy the checkpoint again") from None


def family_of_weights(keys: list[str], prefix: str, where: str) -> str:
    """"pi0" or "pi05" from the key names (``prefix``: "model." for lerobot, "" for openpi)."""
    names = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    pi0 = any(k.startswith(PI0_MARKERS) for k in names)
    pi05 = any(k.startswith(PI05_MARKERS) for k in names) or any("norm.dense." in k for k in names)
    if pi0 == pi05:
        raise CfgrlError(f"{where}: the weights hold {'both' if pi0 else 'neither'} π0's (state_proj, action_time_mlp_*) "
                         f"{'and' if pi0 else 'nor'} π0.5's (time_mlp_*, adaptive norms) parameters; give a π0 or π0.5 checkpoint")
    return "pi05" if pi05 else "pi0"


def chunk_size_of(directory: Path) -> int:
    """The action chunk length a checkpoint was saved with (ours, lerobot's or openpi's config)."""
    meta = read_config(directory)
    layout = known_layout(meta, directory)
    if layout == "cfgrl":
        return int(meta["config"]["chunk_size"])
    if layout == "lerobot":
        return int(meta.get("chunk_size") or LEROBOT_DEFAULT_CHUNK)
    return int(meta["action_horizon"])


def policy_chunk_size(chunk_size: int | None, source: Path | None, preset: str) -> int:
    """The chunk of the policy a run trains: ``policy.chunk_size`` if set, else the checkpoint's
    (``source``), else the fresh preset's. Label windows have this many actions."""
    if chunk_size is not None:
        return chunk_size
    if source is not None:
        return chunk_size_of(source)
    from cfgrl.policy.config import PI0Config

    return PI0Config.from_preset(preset).chunk_size
