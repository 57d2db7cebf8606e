"""Key and config mapping between our models and lerobot's pi0 / pi05 checkpoints.

lerobot keeps PaliGemma and the expert as transformers submodules, so its keys carry those module
paths. Two PaliGemma layouts exist (transformers >= 4.52 and older); both are read, the current one is
written. The tied PaliGemma lm_head and the expert's unused lm_head are accepted and dropped. π0.5's
keys differ only in its own layers (``time_mlp_*`` instead of ``state_proj`` and ``action_time_mlp_*``;
the expert's norms are ``….dense``), which is how ``layout.family_of_weights`` tells the two apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cfgrl.errors import CfgrlError
from cfgrl.policy.checkpoint_files import read_safetensors
from cfgrl.policy.config import PRESETS, PI0Config
from cfgrl.policy.layout import family_of_weights
from cfgrl.policy.materialise import materialise, tokenizer_of
from cfgrl.policy.normalize import FIELDS, NormStats

PG = "model.paligemma_with_expert.paligemma."
EXPERT = "model.paligemma_with_expert.gemma_expert."
STATS_FILE = "normalizer_stats.safetensors"
# Our exact sizes beside an exported checkpoint (lerobot's config.json would reject unknown fields), so
# a non-pi0 preset round-trips; lerobot itself ignores this file.
SIZES_FILE = "cfgrl_sizes.json"
IMAGE_FEATURE = "observation.images."

# (ours, [lerobot key prefixes]): the first is written (current layout); all are read. transformers >= 5
# dropped SigLIP's inner `vision_model` module, so a vision key may come with or without it.
PREFIXES = [
    ("transformer.vision.", [PG + "model.vision_tower.vision_model.", PG + "vision_tower.vision_model.",
                             PG + "model.vision_tower.", PG + "vision_tower."]),
    ("transformer.projector.", [PG + "model.multi_modal_projector.linear.", PG + "multi_modal_projector.linear."]),
    ("transformer.prefix_lm.", [PG + "model.language_model.", PG + "language_model.model."]),
    ("transformer.expert.", [EXPERT + "model."]),
] + [(f"{p}.", [f"model.{p}."]) for p in
     ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out", "time_mlp_in", "time_mlp_out")]
LEROBOT_TYPES = ("pi0", "pi05")  # config.json "type" = our family
TIED_HEADS = (PG + "lm_head.weight", PG + "language_model.lm_head.weight")
IGNORED = (EXPERT + "lm_head.weight",)
CLASSIC_STATS = {
    "state_mean": "normalize_inputs.buffer_observation_state.mean",
    "state_std": "normalize_inputs.buffer_observation_state.std",
    "action_mean": ("normalize_targets.buffer_action.mean", "unnormalize_outputs.buffer_action.mean"),
    "action_std": ("normalize_targets.buffer_action.std", "unnormalize_outputs.buffer_action.std"),
}
# Stats files: lerobot's processors (whatever their step index), and the file cfgrl's export wrote.
PROCESSOR_FILES = ("policy_preprocessor_step_*_normalizer_processor.safetensors",
                   "policy_postprocessor_step_*_unnormalizer_processor.safetensors", STATS_FILE)
FEATURES = {"state": "observation.state", "action": "action"}
# lerobot's normalization_mapping modes -> our kinds (normalize.KINDS)
MODES = {"MEAN_STD": "mean_std", "QUANTILES": "quantile"}
# Load notes are logged under the name they had before the readers left checkpoint.py, so log
# settings that name it keep working.
log = logging.getLogger("cfgrl.policy.checkpoint")


def config_values(meta: dict[str, Any], directory: Path) -> dict[str, Any]:
    """PI0Config fields implied by a lerobot pi0 / pi05 config.json (sizes: the published preset unless
    recorded). lerobot's π0.5 always writes the state into the prompt."""
    sizes_file = directory / SIZES_FILE
    recorded = json.loads(sizes_file.read_text()) if sizes_file.is_file() else {}
    family = meta["type"]
    values: dict[str, Any] = {**PRESETS[family], "preset": family, **recorded}
    inputs, outputs = meta.get("input_features") or {}, meta.get("output_features") or {}
    cameras = [k[len(IMAGE_FEATURE):] for k in inputs if k.startswith(IMAGE_FEATURE)]
    if cameras:
        values["camera_names"] = cameras
    if "observation.state" in inputs:
        values["state_dim"] = int(inputs["observation.state"]["shape"][-1])
    if "action" in outputs:
        values["action_dim"] = int(outputs["action"]["shape"][-1])
    for ours, theirs in (("chunk_size", "chunk_size"), ("max_state_dim", "max_state_dim"), ("max_action_dim", "max_action_dim"),
                         ("max_token_len", "tokenizer_max_length"), ("num_steps", "num_inference_steps"), ("num_steps", "num_steps")):
        if meta.get(theirs) is not None:
            values[ours] = int(meta[theirs])
    if meta.get("image_resolution"):
        values["image_size"] = int(meta["image_resolution"][0])
    return values


def to_ours(weights: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """lerobot state dict -> (our state dict, notes). Unknown keys are passed through to fail the load."""
    state: dict[str, torch.Tensor] = {}
    tied_head = None
    notes: list[str] = []
    for key, tensor in weights.items():
        if key in TIED_HEADS:
            tied_head = tensor
            continue
        if key in IGNORED:
            continue
        if key.startswith(("normalize_", "unnormalize_")):
            continue  # the classic normaliser buffers: read by read_stats
        for ours, theirs in PREFIXES:
            prefix = next((p for p in theirs if key.startswith(p)), None)
            if prefix is not None:
                state[ours + key[len(prefix):]] = tensor
                break
        else:
            state[key] = tensor  # reported as unexpected by the caller
    embed = "transformer.prefix_lm.embed_tokens.weight"
    if embed not in state and tied_head is not None:
        state[embed] = tied_head
        notes.append("token embeddings taken from the tied lm_head")
    return state, notes


def _finite(t: torch.Tensor | None) -> np.ndarray | None:
    if t is None:
        return None
    array = t.float().numpy().reshape(-1)
    return array if np.all(np.isfinite(array)) else None  # lerobot fills never-set buffers with inf


def _classic_buffers(directory: Path) -> dict[str, torch.Tensor]:
    """The classic normaliser buffers in model.safetensors, read without its weights."""
    with safe_open(str(directory / "model.safetensors"), "pt") as weights:
        return {k: weights.get_tensor(k) for k in weights.keys() if k.startswith(("normalize_", "unnormalize_"))}


def stats_kind(meta: dict[str, Any], directory: Path) -> str:
    """The normalisation kind a lerobot config.json declares for state and action (mean_std if none)."""
    mapping = meta.get("normalization_mapping") or {}
    modes = {mapping.get(t, "MEAN_STD") for t in ("STATE", "ACTION")}
    if len(modes) > 1 or not modes <= set(MODES):
        raise CfgrlError(f"{directory}/config.json normalises STATE with {mapping.get('STATE', 'MEAN_STD')} and ACTION with "
                         f"{mapping.get('ACTION', 'MEAN_STD')}; cfgrl reads one kind for both: {' or '.join(MODES)}")
    return MODES[modes.pop()]


def _processor_stats(directory: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every state/action statistic the stats files hold, by lerobot name ("action.q01", ...), and the
    files that hold any. Two files giving one statistic different values is a CfgrlError."""
    wanted = {f"{feature}.{stat}" for feature in FEATURES.values() for stat in ("mean", "std", "q01", "q99")}
    found: dict[str, tuple[np.ndarray, str]] = {}
    sources = []
    for path in sorted({p for pattern in PROCESSOR_FILES for p in directory.glob(pattern)}):
        tensors = {k: v for k, v in load_file(str(path)).items() if k in wanted}
        sources += [path.name] if tensors else []
        for key, tensor in tensors.items():
            value = tensor.float().numpy().reshape(-1)
            if key in found and not np.array_equal(found[key][0], value):
                raise CfgrlError(f"{directory}: {found[key][1]} and {path.name} give different {key}; keep the stats file "
                                 "that belongs to these weights and remove the other")
            found.setdefault(key, (value, path.name))
    return {k: v for k, (v, _) in found.items()}, sources


def read_stats(directory: Path, notes: list[str], kind: str = "mean_std") -> NormStats | None:
    """The checkpoint's normalisation stats of ``kind`` (classic buffers, else the processor stats
    files); None when it has none."""
    if kind == "mean_std":
        buffers = _classic_buffers(directory)
        values: dict[str, np.ndarray | None] = {}
        for field, keys in CLASSIC_STATS.items():
            keys = (keys,) if isinstance(keys, str) else keys
            values[field] = next((a for a in (_finite(buffers.get(k)) for k in keys) if a is not None), None)
        if all(v is not None for v in values.values()):
            notes.append("normalisation stats taken from the classic normaliser buffers")
            return NormStats(**values)
    processor, sources = _processor_stats(directory)
    names = {f"{name}_{stat}": f"{feature}.{stat}" for name, feature in FEATURES.items() for stat in FIELDS[kind]}
    if all(k in processor for k in names.values()):
        notes.append(f"{kind} normalisation stats taken from {', '.join(sources)}")
        return NormStats(kind=kind, **{field: processor[key] for field, key in names.items()})
    if sources:
        lacking = sorted(set(names.values()) - set(processor))
        raise CfgrlError(f"{directory}: {', '.join(sources)} hold no {', '.join(lacking)}, which the {kind} normalisation of its "
                         "config.json needs; give the stats files written with these weights")
    notes.append("no normalisation stats found: the policy carries none (cfgrl train computes them from the stores)")
    return None


def from_ours(state: dict[str, torch.Tensor], stats: NormStats | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Our state dict -> (lerobot weights in the current layout, processor-style stats tensors: none without stats)."""
    weights: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("condition."):
            continue  # lerobot's pi0 has no condition parameters (a trained one is folded in: export.exported_state)
        for ours, theirs in PREFIXES:
            if key.startswith(ours):
                weights[theirs[0] + key[len(ours):]] = tensor
                break
        else:
            raise CfgrlError(f"cannot export parameter {key} to the lerobot layout")
    embeddings = weights[PG + "model.language_model.embed_tokens.weight"]
    weights[TIED_HEADS[0]] = embeddings.clone()
    # lerobot builds (and loads strictly) the expert's lm_head although nothing reads it: write zeros
    expert_width = state["action_in_proj.weight"].shape[0]
    weights[IGNORED[0]] = torch.zeros(embeddings.shape[0], expert_width, dtype=embeddings.dtype)
    if stats is None:
        return weights, {}
    return weights, {f"{FEATURES[field.split('_')[0]]}.{field.split('_')[1]}": torch.tensor(value, dtype=torch.float32)
                     for field, value in stats.fields().items()}


def check_family(family: str, keys: Iterable[str], where: Path) -> None:
    """A config of one family over the other's weights (their key names) is refused in one line."""
    held = family_of_weights(list(keys), "model.", str(where / "model.safetensors"))
    if held != family:
        raise CfgrlError(f"{where}: config.json describes a {family} policy but model.safetensors holds {held} weights "
                         f"({'time_mlp_* and adaptive norms' if held == 'pi05' else 'state_proj and action_time_mlp_*'}); "
                         f"give a config.json of type {held!r} or the {family} weights")


def sizes_json(config: PI0Config) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in ("condition_mode", "use_prefix_dropout")}


def config_json(config: PI0Config, kind: str = "mean_std") -> dict[str, Any]:
    image = {"type": "VISUAL", "shape": [3, config.image_size, config.image_size]}
    return {
        "type": config.family,
        "input_features": {
            **{IMAGE_FEATURE + cam: image for cam in config.camera_names},
            "observation.state": {"type": "STATE", "shape": [config.state_dim]},
        },
        "output_features": {"action": {"type": "ACTION", "shape": [config.action_dim]}},
        "normalization_mapping": {"VISUAL": "IDENTITY", **dict.fromkeys(("STATE", "ACTION"), {v: k for k, v in MODES.items()}[kind])},
        "chunk_size": config.chunk_size, "n_action_steps": config.chunk_size,
        "max_state_dim": config.max_state_dim, "max_action_dim": config.max_action_dim,
        "tokenizer_max_length": config.max_token_len, "num_inference_steps": config.num_steps,
        "image_resolution": [config.image_size, config.image_size],
        "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
    }


# -- reading: a lerobot checkpoint as our policy (checkpoint.load_policy picks this reader) ------------

def load_lerobot(cls, directory: Path, meta: dict, tokenizer, overrides: dict, dtype: torch.dtype):
    """The policy a lerobot pi0 / pi05 checkpoint holds, its weights in ``dtype``."""
    notes: list[str] = []
    stats = read_stats(directory, notes, stats_kind(meta, directory))
    weights = read_safetensors(directory / "model.safetensors", dtype)
    return from_lerobot(cls, directory, meta, weights, stats, notes, tokenizer, overrides)


def from_lerobot(cls, directory: Path, meta: dict, weights: dict, stats: NormStats | None, notes: list[str], tokenizer,
                 overrides: dict):
    """Our policy from a checkpoint in lerobot's terms: its config.json ``meta``, ``weights`` under lerobot's key names."""
    config = PI0Config.from_dict({**config_values(meta, directory), **overrides})
    check_family(config.family, weights, directory)
    state, converted = to_ours(weights)
    notes += converted
    policy, condition_keys = materialise(cls, config, stats, tokenizer_of(config, directory, tokenizer), state, directory, True)
    if condition_keys:  # text mode has none: its condition is the prompt
        notes.append(f"initialised new condition parameters ({config.condition_mode}): {', '.join(condition_keys)}")
    policy.load_report = notes
    for note in notes:
        log.info("%s: %s", directory, note)
    return policy
