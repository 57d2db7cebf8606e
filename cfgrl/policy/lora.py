"""LoRA adapters on a policy, through ``peft``: attach, merge into plain weights, save and restore.

The adapters go on the ``nn.Linear`` layers whose module names match any of the target regular
expressions (searched, not anchored: ``q_proj`` hits the query projection of all three towers, vision,
prefix LM and expert; ``expert\\..*_proj`` the expert's only). peft freezes everything else; the
condition parameters train too, as peft's ``modules_to_save``. The policy object stays what it was
(peft replaces its layers in place), so sampling and losses run unchanged.

A saved policy never holds adapters: ``merged_state`` folds each one into its layer's weight
(W + B A alpha/r, the delta of peft's linear LoRA) without touching the live model, so training goes
on exactly; it works on a gathered state dict too (FSDP). The
adapters themselves are written beside it (``ADAPTER_DIR``) in peft's file names; a resumed run
rebuilds base + adapters from them.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from cfgrl.errors import CfgrlError
from cfgrl.schemas import LORA_ADAPTER

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's names: the folder reads as a peft adapter too
ADAPTER_CONFIG = "adapter_config.json"
RECORD = "cfgrl_lora.json"  # our stamp: schema, settings, the base policy's id
NAME = "default"  # peft's adapter name


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}


def target_names(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The ``nn.Linear`` module names of ``model`` that the regular expressions hit; CfgrlError for one that hits none."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    chosen: set[str] = set()
    for pattern in targets:
        try:
            hits = {name for name in linears if re.search(pattern, name)}
        except re.error as exc:
            raise CfgrlError(f"train.lora_targets: {pattern!r} is not a regular expression ({exc})") from None
        if not hits:
            raise CfgrlError(f"train.lora_targets: {pattern!r} matches no linear layer; accepted: regular expressions searched in names "
                             f"such as {linears[0]} (e.g. q_proj, v_proj, expert.*_proj, prefix_lm.*mlp)")
        chosen |= hits
    return sorted(chosen)


def attach(policy: nn.Module, settings: LoraSettings):
    """Put LoRA adapters on ``policy.model`` in place (peft); returns peft's wrapper, which the optimiser
    does not need (the policy's own trainable parameters are the adapters and the condition)."""
    from peft import LoraConfig, get_peft_model

    if settings.rank < 1:
        raise CfgrlError(f"train.lora_rank must be at least 1 to train LoRA adapters, got {settings.rank}")
    model = policy.model
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=target_names(model, settings.targets),
        modules_to_save=["condition"] if any(True for _ in model.condition.parameters()) else None,
    )
    return get_peft_model(model, config)


def is_attached(model: nn.Module) -> bool:
    if "peft" not in sys.modules:  # adapters only come through peft: no import (seconds) on every save or policy id
        return False
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())


@torch.no_grad()
def merged_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``state`` (default: ``model.state_dict()``; a sharded run passes the gathered one) under the plain key
    names, each adapter folded into its layer: W + B A * (alpha / rank), the weights ``model`` without peft
    would hold. The live model is untouched. The identity without adapters."""
    state = model.state_dict() if state is None else state
    if not is_attached(model):
        return state
    from peft.tuners.lora import LoraLayer

    plain: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key or ".original_module." in key:
            continue  # adapter factors (merged below); the frozen copy of a modules_to_save module
        plain[key.replace(".base_layer.", ".").replace(f".modules_to_save.{NAME}.", ".")] = value
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            weight = state[f"{name}.base_layer.weight"]
            down, up = state[f"{name}.lora_A.{NAME}.weight"].float(), state[f"{name}.lora_B.{NAME}.weight"].float()
            plain[f"{name}.weight"] = (weight.float() + (up @ down) * layer.scaling[NAME]).to(weight.dtype)
    return plain


def save_adapter(peft_model, settings: LoraSettings, base_id: str, directory: Path, state: dict[str, torch.Tensor]) -> None:
    """The adapter and condition weights (peft's saved form) taken from ``state``, the model's full state dict
    (gathered, under FSDP), and their settings, into ``directory``."""
    from peft import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    wrapped = {f"base_model.model.{k}": v for k, v in state.items()}  # keys as peft's wrapper holds them
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model, state_dict=wrapped).items()}
    save_file(weights, str(directory / ADAPTER_WEIGHTS))
    peft_config = peft_model.peft_config[NAME].to_dict()
    (directory / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=1, default=sorted))
    (directory / RECORD).write_text(json.dumps({**LORA_ADAPTER.stamp(), **settings.to_dict(), "base_policy_id": base_id}, indent=1))


def read_record(directory: Path) -> dict:
    path = directory / RECORD
    if not path.is_file():
        raise CfgrlError(f"'{directory}' holds no LoRA adapter ({RECORD} missing); this checkpoint was not written by a LoRA run")
    record = json.loads(path.read_text())
    LORA_ADAPTER.check(record, f"LoRA adapter '{directory}'")
    return record


def load_adapter(peft_model, directory: Path) -> None:
    """Restore adapter and condition weights saved by ``save_adapter`` into an attached model."""
    from peft import set_peft_model_state_dict

    from cfgrl.policy.checkpoint import read_safetensors

    result = set_peft_model_state_dict(peft_model, read_safetensors(directory / ADAPTER_WEIGHTS))
    missing = [k for k in result.missing_keys if ".lora_" in k or ".modules_to_save." in k]
    if missing or result.unexpected_keys:
        raise CfgrlError(f"LoRA adapter '{directory}' does not fit this policy's adapters (missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]})")
