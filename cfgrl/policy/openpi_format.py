"""openpi PyTorch checkpoints, read as the lerobot layout they almost are.

openpi's ``examples/convert_jax_model_to_pytorch.py`` writes, per checkpoint directory:
  model.safetensors  lerobot's key names without its ``model.`` prefix (``paligemma_with_expert.…``,
                     ``action_in_proj``, …), saved with safetensors' ``save_model``, which keeps one
                     name of the tied PaliGemma embedding/lm_head pair (so ``embed_tokens`` may be absent)
  config.json        only action_dim (the padded model width), action_horizon, paligemma_variant,
                     action_expert_variant, precision
  assets/<asset_id>/norm_stats.json  the training run's stats, copied (``asset_id`` may hold a slash):
                     {"norm_stats": {"state": {"mean", "std", "q01", "q99"}, "actions": {...}}}
``to_lerobot`` turns that into what the lerobot loader reads: the weights under ``model.``, a lerobot
config.json (type pi0 or pi05 told by the weights, never the directory name; chunk_size =
action_horizon; the robot's state/action dims and openpi's three camera names) and the stats, of
openpi's kind: mean/std for π0, quantiles for every other model (openpi's ``use_quantile_norm``).
As openpi does when it normalises, stats longer than the robot's state or action (an older openpi
padded them to the model width with zeros) apply by their first entries: the dims are the given
``state_dim``/``action_dim``, else the stats' length without trailing all-zero entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfgrl.errors import CfgrlError
from cfgrl.policy import lerobot_format
from cfgrl.policy.checkpoint_files import read_safetensors
from cfgrl.policy.layout import family_of_weights
from cfgrl.policy.normalize import FIELDS, NormStats

ASSETS = "assets"
NORM_STATS = "norm_stats.json"
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's model.IMAGE_KEYS
KIND = {"pi0": "mean_std", "pi05": "quantile"}
TOKEN_LEN = {"pi0": 48, "pi05": 200}  # openpi's Pi0Config.max_token_len defaults
FEATURES = {"state": "state", "action": "actions"}
VARIANTS = {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}  # the published sizes (LoRA variants share them)


@dataclass
class Converted:
    """An openpi checkpoint in lerobot's terms: ``meta`` (a lerobot config.json), ``weights`` (lerobot keys)."""

    family: str
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    stats: NormStats | None
    notes: list[str]


def _check_variants(meta: dict[str, Any], directory: Path) -> None:
    for key, size in VARIANTS.items():
        variant = str(meta.get(key, size))
        if not variant.startswith(size):
            raise CfgrlError(f"{directory}/config.json: {key} {variant!r} is not read; cfgrl reads {size} and its LoRA variant")


def norm_stats_files(directory: Path) -> list[Path]:
    assets = directory / ASSETS
    if not assets.is_dir():
        raise CfgrlError(f"{directory} is an openpi checkpoint without {ASSETS}/ (its norm stats); copy the training run's "
                         f"assets/<asset_id>/{NORM_STATS} into it, as openpi's converter does")
    return sorted(assets.rglob(NORM_STATS))


def _read_norm_stats(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        return {name: data["norm_stats"][key] for name, key in FEATURES.items()}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CfgrlError(f"{path} is not openpi norm stats ({{\"norm_stats\": {{\"state\": ..., \"actions\": ...}}}}): {exc}") from None


def _dim(values: dict[str, Any], given: int | None) -> int:
    """The robot's dims: given, else the stats' length without trailing all-zero entries (model-width padding)."""
    if given is not None:
        return given
    columns = np.array([np.asarray(v, dtype=np.float64) for v in values.values() if v is not None])
    nonzero = np.flatnonzero(np.any(columns != 0, axis=0))
    return int(nonzero[-1]) + 1 if len(nonzero) else columns.shape[1]


def read_stats(directory: Path, kind: str, dims: dict[str, int | None], notes: list[str]) -> tuple[NormStats | None, dict[str, int | None]]:
    """The checkpoint's stats of ``kind`` cut to the robot's dims, and those dims (None: no stats).
    Several norm_stats.json that differ are a CfgrlError."""
    files = norm_stats_files(directory)
    if not files:
        notes.append(f"{ASSETS}/ holds no {NORM_STATS}: the policy carries no stats (cfgrl train computes them from the stores)")
        return None, dims
    raw = [_read_norm_stats(path) for path in files]
    if any(other != raw[0] for other in raw[1:]):
        names = ", ".join(str(p.relative_to(directory)) for p in files)
        raise CfgrlError(f"{directory}: {len(files)} different {NORM_STATS} files ({names}); keep only the one of the data these "
                         "weights were trained on")
    values: dict[str, Any] = {}
    found = {}
    for name, stats in raw[0].items():
        found[name] = _dim(stats, dims.get(name))
        for stat in FIELDS[kind]:
            if stats.get(stat) is None:
                raise CfgrlError(f"{files[0]}: {FEATURES[name]} has no {stat}, which {kind} normalisation needs")
            values[f"{name}_{stat}"] = np.asarray(stats[stat], dtype=np.float64)[: found[name]]
    notes.append(f"{kind} normalisation stats taken from {files[0].relative_to(directory)}")
    return NormStats(kind=kind, **values), found


def to_lerobot(directory: Path, meta: dict[str, Any], weights: dict[str, torch.Tensor], state_dim: int | None = None,
               action_dim: int | None = None) -> Converted:
    """An openpi checkpoint as the lerobot loader's inputs (see the module docstring)."""
    _check_variants(meta, directory)
    family = family_of_weights(list(weights), "", str(directory / "model.safetensors"))
    notes = [f"openpi {'π0.5' if family == 'pi05' else 'π0'} checkpoint (told by its weights)"]
    stats, dims = read_stats(directory, KIND[family], {"state": state_dim, "action": action_dim}, notes)
    missing = [f"{name}_dim" for name, dim in dims.items() if dim is None]
    if missing:
        raise CfgrlError(f"{directory} carries no norm stats to tell the robot's dims: give {' and '.join(missing)} "
                         "(from_pretrained overrides)")
    width = int(meta["action_dim"])
    lerobot_meta = {
        "type": family,
        "input_features": {**{f"observation.images.{cam}": {"type": "VISUAL", "shape": [3, 224, 224]} for cam in CAMERAS},
                           "observation.state": {"type": "STATE", "shape": [dims["state"]]}},
        "output_features": {"action": {"type": "ACTION", "shape": [dims["action"]]}},
        "chunk_size": int(meta["action_horizon"]), "n_action_steps": int(meta["action_horizon"]),
        "max_state_dim": width, "max_action_dim": width, "tokenizer_max_length": TOKEN_LEN[family],
        "normalization_mapping": {"VISUAL": "IDENTITY", **dict.fromkeys(("STATE", "ACTION"), "MEAN_STD" if family == "pi0" else "QUANTILES")},
    }
    return Converted(family, lerobot_meta, {f"model.{k}": v for k, v in weights.items()}, stats, notes)


# -- reading: an openpi checkpoint as our policy (checkpoint.load_policy picks this reader) -------------

def load_openpi(cls, directory: Path, meta: dict, tokenizer, overrides: dict, dtype: torch.dtype):
    """The policy an openpi checkpoint holds, its weights in ``dtype``: converted, then read as lerobot's layout."""
    weights = read_safetensors(directory / "model.safetensors", dtype)
    converted = to_lerobot(directory, meta, weights, overrides.get("state_dim"), overrides.get("action_dim"))
    if converted.family == "pi05" and "discrete_state_input" not in overrides:
        raise CfgrlError(f"{directory} is an openpi π0.5 checkpoint, whose config.json does not record whether the state is "
                         "written into the prompt: give discrete_state_input=True (openpi's default) or False (pi05_libero)")
    return lerobot_format.from_lerobot(cls, directory, converted.meta, converted.weights, converted.stats, converted.notes,
                                       tokenizer, overrides)
