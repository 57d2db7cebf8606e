"""Computed training memory of the published sizes on one device, per regime and dtype (no weights allocated).

    .venv/bin/python bench/memory_plan.py [--presets pi0 pi05] [--lora-rank 16]

Parameters are counted on the meta device: the total P and the trainable T of each regime (full, expert-
only = ``train.train_expert_only``, LoRA = ``train.lora_rank`` on the default ``train.lora_targets``
plus the condition). Bytes, before activations:

    fp32 weights:  4 P (weights) + 4 T (grads) + 8 T (AdamW moments)                 = 4 P + 12 T
    bf16 weights:  2 P (weights) + 4 T (fp32 masters) + 4 T (their grads) + 8 T (AdamW) = 2 P + 16 T

(bf16 training gives each trainable weight's gradient to its fp32 master as soon as backward ends, so
the bf16 gradient lives only until then.) A GPU fits a regime when this plus the activations of a
batch does: the right-most columns say which of the common sizes hold the computed figure with 20%
left for activations, CUDA context and fragmentation (gradient checkpointing keeps activations small).
"""

from __future__ import annotations

import argparse

from accelerate import init_empty_weights

from cfgrl.policy import PI0Config, PI0Policy
from cfgrl.policy import lora

GPUS = (24, 40, 48, 80)  # GB: RTX 4090 / L4-class, A100-40, L40S / A6000, A100-80 / H100
GiB = 2**30


def counts(preset: str, rank: int) -> dict[str, tuple[int, int]]:
    """regime -> (total parameters, trainable parameters)."""
    from cfgrl.config import TrainConfig

    config = PI0Config.from_preset(preset, tokenizer="byte")
    out = {}
    for regime in ("full", "expert-only", "LoRA"):
        with init_empty_weights():
            policy = PI0Policy(config)
        if regime == "LoRA":
            lora.attach(policy, lora.LoraSettings(rank, float(rank), 0.0, tuple(TrainConfig().lora_targets)))
        else:
            policy.configure_training(train_expert_only=regime == "expert-only")
        total = sum(p.numel() for n, p in policy.named_parameters() if ".lora_" not in n and ".modules_to_save." not in n)
        out[regime] = (total, sum(p.numel() for p in policy.parameters() if p.requires_grad))
    return out


def bytes_needed(total: int, trained: int, dtype: str) -> int:
    return 4 * total + 12 * trained if dtype == "fp32" else 2 * total + 16 * trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["pi0", "pi05"])
    parser.add_argument("--lora-rank", type=int, default=16)
    args = parser.parse_args()
    print("| preset | regime | dtype | trained | computed (before activations) | fits (GB, 20% spare) |")
    print("|--------|--------|-------|--------:|------------------------------:|----------------------|")
    for preset in args.presets:
        for regime, (total, trained) in counts(preset, args.lora_rank).items():
            for dtype in ("fp32", "bf16"):
                need = bytes_needed(total, trained, dtype)
                fits = ", ".join(str(g) for g in GPUS if need * 1.2 <= g * 1e9) or "none: shard it (FSDP)"
                print(f"| {preset} | {regime} | {dtype} | {trained / 1e6:,.1f} M of {total / 1e9:.2f} B | {need / GiB:.1f} GiB | {fits} |")


if __name__ == "__main__":
    main()
