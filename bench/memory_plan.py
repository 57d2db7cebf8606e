"""Computed training memory of the published sizes: on one device per regime and dtype, and per GPU across
devices (DDP, FSDP over 1, 2, 8 GPUs) per batch. No weights are allocated.

    .venv/bin/python bench/memory_plan.py [--presets pi0 pi05] [--lora-rank 16] [--json OUT]

Parameters are counted on the meta device: the total P and the trainable T of each regime (full, expert-
only = ``train.train_expert_only``, LoRA = ``train.lora_rank`` on the default ``train.lora_targets``
plus the condition). Bytes, before activations:

    fp32 weights:  4 P (weights) + 4 T (grads) + 8 T (AdamW moments)                 = 4 P + 12 T
    bf16 weights:  2 P (weights) + 4 T (fp32 masters) + 4 T (their grads) + 8 T (AdamW) = 2 P + 16 T

(bf16 training gives each trainable weight's gradient to its fp32 master as soon as backward ends, so
the bf16 gradient lives only until then.) A GPU fits a regime when this plus the activations of a
batch does: the right-most columns say which of the common sizes hold the computed figure with 20%
left for activations, CUDA context and fragmentation (gradient checkpointing keeps activations small).

Across devices (full fine-tune, ``train.param_dtype: bf16``, gradient checkpointing), per GPU:

    DDP:          2 P + 16 T                                  (every GPU holds everything)
    FSDP over N:  (4 P + 12 T) / N  +  2 x 2 x U  +  2 R       (fp32 shards are the masters; two units
                                                               gathered in bf16 at a time, the running one
                                                               and the prefetched one; the root group R
                                                               stays gathered through the step)

plus checkpointed activations per sample: every layer's input of both streams kept for the backward,
and one layer pair's intermediates while it is recomputed (3 cameras of 256 tokens and a 48-token
prompt for π0, 200 for π0.5; 51 suffix tokens), in bf16. U: the largest unit (a prefix/expert layer
pair, or the token embeddings), R: the parameters outside every unit.
"""

from __future__ import annotations

import argparse

from _common import Figures, add_json_option  # bench/ is on the path of a script run from it
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


def units(preset: str) -> tuple[int, int]:
    """(largest FSDP unit, parameters outside every unit), counted on the meta device."""
    config = PI0Config.from_preset(preset, tokenizer="byte")
    with init_empty_weights():
        policy = PI0Policy(config)
    transformer = policy.model.transformer
    groups = [sum(p.numel() for layer in pair.layers for p in layer.parameters()) for pair in transformer.pairs]
    groups += [sum(p.numel() for p in layer.parameters()) for layer in transformer.vision.encoder.layers]
    groups.append(transformer.prefix_lm.embed_tokens.weight.numel())
    total = sum(p.numel() for p in policy.parameters())
    return max(groups), total - sum(groups)


def activation_bytes(preset: str) -> int:
    """Checkpointed activations of one training sample in bf16 (an estimate; see the module docstring)."""
    c = PI0Config.from_preset(preset, tokenizer="byte")
    prefix, suffix = 3 * c.tokens_per_image + c.max_token_len, c.chunk_size + 1
    kept = c.num_layers * (prefix * c.prefix_width + suffix * c.expert_width)
    recomputed = prefix * (4 * c.prefix_width + 2 * c.prefix_mlp) + suffix * (4 * c.expert_width + 2 * c.expert_mlp)
    return 2 * (kept + recomputed)


def per_gpu(preset: str, total: int, trained: int, devices: str, batch: int) -> float:
    unit, root = units(preset)
    states = 2 * total + 16 * trained if devices == "DDP" else (4 * total + 12 * trained) / int(devices.split()[-1]) + 4 * unit + 2 * root
    return (states + batch * activation_bytes(preset)) / GiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["pi0", "pi05"])
    parser.add_argument("--lora-rank", type=int, default=16)
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    print("| preset | regime | dtype | trained | computed (before activations) | fits (GB, 20% spare) |")
    print("|--------|--------|-------|--------:|------------------------------:|----------------------|")
    for preset in args.presets:
        for regime, (total, trained) in counts(preset, args.lora_rank).items():
            for dtype in ("fp32", "bf16"):
                need = bytes_needed(total, trained, dtype)
                fits = ", ".join(str(g) for g in GPUS if need * 1.2 <= g * 1e9) or "none: shard it (FSDP)"
                print(f"| {preset} | {regime} | {dtype} | {trained / 1e6:,.1f} M of {total / 1e9:.2f} B | {need / GiB:.1f} GiB | {fits} |")
                figures.add(f"{preset} {regime} {dtype}: computed, before activations", need / GiB, "GiB")
            figures.add(f"{preset} {regime}: trained parameters", trained / 1e6, "M")
            figures.add(f"{preset} {regime}: parameters", total / 1e9, "B")
    print()
    print("Full fine-tune across devices, bf16, gradient checkpointing: per-GPU GiB at a per-GPU batch of 8 / 32 (computed)")
    print()
    print("| preset | strategy | batch 8 | batch 32 | fits at 32 (GB, 20% spare) |")
    print("|--------|----------|--------:|---------:|----------------------------|")
    for preset in args.presets:
        total, trained = counts(preset, args.lora_rank)["full"]
        for devices in ("DDP", "FSDP over 1", "FSDP over 2", "FSDP over 8"):
            small, large = per_gpu(preset, total, trained, devices, 8), per_gpu(preset, total, trained, devices, 32)
            fits = ", ".join(str(g) for g in GPUS if large * GiB * 1.2 <= g * 1e9) or "none"
            print(f"| {preset} | {devices} | {small:.1f} | {large:.1f} | {fits} |")
            for batch, gib in ((8, small), (32, large)):
                figures.add(f"{preset} full fine-tune, {devices}: per GPU at batch {batch}", gib, "GiB")
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
