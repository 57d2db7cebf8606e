"""What a run trains and in which precision: bf16 weights, LoRA adapters (peft), the trainable set.

``train.param_dtype: bf16`` holds the weights in bf16 (the optimiser's fp32 masters: ``optim.MasterWeights``).
``train.lora_rank > 0`` puts LoRA adapters on ``train.lora_targets`` of a pretrained policy
(``policy.path``); only the adapters and the condition train, and every checkpoint holds the policy
with the adapters merged plus the adapters beside it (``cfgrl.policy.lora``). A resumed LoRA run
rebuilds the same base from ``policy.path`` (its id is checked) and takes the adapters back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from cfgrl.config import Config, TrainConfig
from cfgrl.errors import CfgrlError
from cfgrl.policy import PI0Policy
from cfgrl.policy import lora as lora_io
from cfgrl.policy.policy import dtype_named

# settings a resumed run cannot ignore: its checkpoint's weights and optimiser state are shaped by them
FIXED_ON_RESUME = ("train.param_dtype", "train.lora_rank", "train.lora_targets", "train.lora_alpha", "train.lora_dropout", "train.strategy")


def check_precision(cfg: Config) -> torch.dtype:
    """The weights' dtype; one clear line for a setting that cannot work, before anything is written."""
    t = cfg.train
    dtype = dtype_named(t.param_dtype, "train.param_dtype")
    if t.lora_rank < 0:
        raise CfgrlError(f"train.lora_rank must be 0 (no LoRA) or a positive rank, got {t.lora_rank}")
    if t.lora_rank:
        if cfg.policy.path is None:
            raise CfgrlError("LoRA adapts a pretrained policy: give policy.path (--policy DIR); a fresh preset trains in full")
        if t.train_expert_only or t.freeze_vision:
            raise CfgrlError("LoRA trains only its adapters and the condition: drop train.train_expert_only / train.freeze_vision "
                             "and choose the towers with train.lora_targets (e.g. [expert.*_proj])")
        if not t.lora_targets:
            raise CfgrlError("train.lora_targets is empty; give regular expressions of linear layers, e.g. [q_proj, v_proj]")
    return dtype


def check_resumed_precision(asked: list[str], saved: TrainConfig, run_dir: Path) -> None:
    """A resumed run keeps its precision, adapters and strategy: asking for others (``asked``: the user's settings that
    differ from the run's, as section.key=value) is an error, not a warning."""
    changed = [item for item in asked if item.split("=", 1)[0] in FIXED_ON_RESUME]
    if not changed:
        return
    keys = [item.split("=", 1)[0] for item in changed]
    kept = ", ".join(f"{key}={getattr(saved, key.removeprefix('train.'))}" for key in keys)
    raise CfgrlError(f"'{run_dir}' runs with {kept}; --resume continues it so (its weights and optimiser state are shaped by them), "
                     f"not with {', '.join(changed)}: drop them, or start a new run from its policy (--policy {run_dir}/last)")


def trainable(policy: PI0Policy, t: TrainConfig) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimiser updates, by name: LoRA's (already chosen by peft), or the regime's."""
    if t.lora_rank:
        policy.model.transformer.gradient_checkpointing = t.gradient_checkpointing
    else:
        policy.configure_training(t.freeze_vision, t.train_expert_only, t.gradient_checkpointing)
    return {n: p for n, p in policy.named_parameters() if p.requires_grad}


class Adapters:
    """A LoRA run's adapters: peft's wrapper, the settings and the base policy's id (checked on resume)."""

    def __init__(self, peft_model, settings: lora_io.LoraSettings, base_id: str):
        self.peft_model, self.settings, self.base_id = peft_model, settings, base_id

    @classmethod
    def attach(cls, policy: PI0Policy, t: TrainConfig, resumed: Path | None, say: Callable[[str], None]) -> "Adapters | None":
        """Adapters on ``policy`` (the base) for a LoRA run, restored from ``resumed`` when resuming; None without LoRA."""
        if not t.lora_rank:
            return None
        settings = lora_io.LoraSettings(t.lora_rank, t.lora_alpha, t.lora_dropout, tuple(t.lora_targets))
        base_id = policy.policy_id
        adapters = cls(lora_io.attach(policy, settings), settings, base_id)
        if resumed is not None:
            folder = resumed / lora_io.ADAPTER_DIR
            record = lora_io.read_record(folder)
            if record["base_policy_id"] != base_id:
                raise CfgrlError(f"policy.path now holds policy {base_id}, but this LoRA run adapted {record['base_policy_id']}; "
                                 "restore the base checkpoint it started from to resume")
            lora_io.load_adapter(adapters.peft_model, folder)
        trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        total = sum(p.numel() for p in policy.parameters())
        say(f"LoRA rank {t.lora_rank} on {len(adapters.peft_model.peft_config[lora_io.NAME].target_modules)} layers: "
            f"{trained / 1e6:.2f} M of {total / 1e6:.1f} M parameters train (adapters and condition)")
        return adapters

    def save(self, checkpoint: Path, state: dict[str, torch.Tensor]) -> None:
        """The adapters beside a checkpoint's policy, from ``state``: the model's full (gathered) state dict."""
        lora_io.save_adapter(self.peft_model, self.settings, self.base_id, checkpoint / lora_io.ADAPTER_DIR, state)
