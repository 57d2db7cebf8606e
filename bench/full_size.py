"""The published sizes end to end on this machine: π0 and π0.5 (3.3 B parameters) in bf16.

    .venv/bin/python bench/full_size.py [--presets pi0 pi05] [--work /tmp/cfgrl_full_size] [--threads 2] [--json OUT]

Per preset, each part in its own process (so its peak resident memory is its own):

1. write   build the preset with random bf16 weights on the meta device, materialised one tensor at a
           time (the byte tokenizer with PaliGemma's vocabulary, 257152, stands in for its SentencePiece
           model, which needs the hub), and write it as a lerobot checkpoint directory;
2. sample  ``from_pretrained`` in bf16, then one guided chunk (w = 2: both branches) and one w = 1 chunk
           from two 224x224 cameras, batch 1, 10 Euler steps;
3. lora    load, LoRA (rank 16, peft) on train.lora_targets' default (both Gemmas' attention and MLP, as
           openpi's LoRA recipe) plus the condition, gradient
           checkpointing, one training step at batch 2 (fp32 masters and AdamW state of the trainable
           weights only), then save the merged policy and load it back as a plain policy;
4. expert  load, train_expert_only with gradient checkpointing, one step at batch 2.

Each part prints its wall time per phase, the process's peak resident memory (``ru_maxrss``) when the
phase ended, and the part's peak with its ratio to the bf16 weights' own size (the baseline: 1.0 = one
copy of the weights; a fresh Python with torch imported holds about 0.45 GiB).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb")
BYTE_TOKENIZER = {"tokenizer": "byte"}  # vocab_size stays the preset's 257152


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def weight_bytes(policy) -> int:
    return sum(p.numel() * p.element_size() for p in policy.parameters())


class Clock:
    """Wall time of each phase (``NAME_s``) and the process's peak memory when it ended (``NAME_gib``)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[f"{name}_s"] = round(now - self.start, 1)
        self.parts[f"{name}_gib"] = round(peak_gib(), 2)
        self.start = now


def random_policy(preset: str, cameras: tuple[str, ...] = CAMERAS, device: str = "cpu"):
    """The preset with random bf16 weights, built on the meta device and materialised on ``device`` one
    tensor at a time: never a float32 copy of the model."""
    from accelerate import init_empty_weights

    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset(preset, camera_names=cameras, state_dim=8, action_dim=7, **BYTE_TOKENIZER)
    with init_empty_weights():
        policy = PI0Policy(config, stats=NormStats.identity(8, 7))
    generator = torch.Generator(device).manual_seed(0)
    for module in policy.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            value = torch.empty(param.shape, dtype=torch.bfloat16, device=device)
            value.normal_(0.0, 0.02, generator=generator)
            module.register_parameter(name, torch.nn.Parameter(value, requires_grad=param.requires_grad))
    return policy.to(device)  # the buffers, which init_empty_weights kept real on the CPU


def part_write(preset: str, directory: Path) -> dict:
    from cfgrl.policy.checkpoint import export_lerobot

    clock = Clock()
    policy = random_policy(preset)
    clock.lap("build")
    export_lerobot(policy, directory)
    clock.lap("write")
    return {**clock.parts, "params_b": sum(p.numel() for p in policy.parameters()) / 1e9, "weights_gib": weight_bytes(policy) / 2**30}


def load(directory: Path):
    from cfgrl.policy import PI0Policy

    return PI0Policy.from_pretrained(directory, dtype=torch.bfloat16, **BYTE_TOKENIZER)


def observation(batch: int, cameras: tuple[str, ...] = CAMERAS, device: str | torch.device = "cpu") -> dict:
    """Two 224x224 cameras, the state and a LIBERO prompt, on ``device`` (the same draws on any device)."""
    g = torch.Generator().manual_seed(1)
    images = {cam: torch.randint(0, 256, (batch, 224, 224, 3), generator=g, dtype=torch.uint8).to(device) for cam in cameras}
    return {"images": images, "state": torch.randn(batch, 8, generator=g).to(device),
            "prompt": ["pick up the black bowl and place it on the plate"] * batch}


def part_sample(directory: Path) -> dict:
    clock = Clock()
    policy = load(directory).eval()
    clock.lap("load")
    policy.condition_trained = True  # w = 2 runs both branches, as a trained policy does
    for w in (2.0, 1.0):
        actions = policy.sample_actions(observation(1), cfg_scale=w)
        assert torch.isfinite(actions).all()
        clock.lap(f"chunk_w{w:g}")
    return clock.parts


def make_step(policy, params: dict, batch_size: int) -> Callable[[], float]:
    """One optimiser step on a fixed random batch, as the trainer takes it (bf16 autocast on CUDA, fp32
    masters of bf16 weights, AdamW); each call takes the next step and returns its loss."""
    from cfgrl.train.optim import MasterWeights

    device = policy.device
    masters = MasterWeights(params)
    optimiser = torch.optim.AdamW(masters.params, lr=1e-5)
    batch = {**observation(batch_size, policy.config.camera_names, device),
             "actions": torch.randn(batch_size, policy.config.chunk_size, 7, device=device),
             "o": torch.tensor([1, -1] * batch_size)[:batch_size]}
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext

    def step() -> float:
        with autocast():
            loss = policy.compute_loss(batch).mean()
        loss.backward()
        masters.take_grads()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        masters.push()
        return float(loss)

    return step


def train_step(policy, params: dict) -> float:
    return make_step(policy, params, 2)()


def part_lora(directory: Path, saved: Path) -> dict:
    from cfgrl.policy import lora
    from cfgrl.train.precision import trainable
    from cfgrl.config import TrainConfig

    clock = Clock()
    policy = load(directory)
    clock.lap("load")
    t = TrainConfig(lora_rank=16, lora_alpha=16.0, gradient_checkpointing=True)
    lora.attach(policy, lora.LoraSettings(t.lora_rank, t.lora_alpha, 0.0, tuple(t.lora_targets)))
    params = trainable(policy, t)
    policy.train()
    loss = train_step(policy, params)
    clock.lap("step")
    policy.condition_trained = True
    policy.save_pretrained(saved)
    clock.lap("save_merged")
    del policy
    again = load(saved)
    assert not lora.is_attached(again.model)
    clock.lap("reload")
    return {**clock.parts, "loss": round(loss, 4), "trained_m": sum(p.numel() for p in params.values()) / 1e6}


def part_expert(directory: Path) -> dict:
    clock = Clock()
    policy = load(directory)
    clock.lap("load")
    policy.configure_training(train_expert_only=True, gradient_checkpointing=True)
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    policy.train()
    loss = train_step(policy, params)
    clock.lap("step")
    return {**clock.parts, "loss": round(loss, 4), "trained_m": sum(p.numel() for p in params.values()) / 1e6}


def run_part(args: list[str], threads: int) -> dict:
    """One part in a fresh process: its JSON result plus its own peak resident memory."""
    command = [sys.executable, __file__, "--part", *args, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"part {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["pi0", "pi05"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cfgrl_full_size"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part:
        kind, *paths = args.part
        result = {"write": lambda: part_write(paths[0], Path(paths[1])), "sample": lambda: part_sample(Path(paths[0])),
                  "lora": lambda: part_lora(Path(paths[0]), Path(paths[1])), "expert": lambda: part_expert(Path(paths[0]))}[kind]()
        print(json.dumps({**result, "peak_gib": round(peak_gib(), 2)}))
        return

    figures = Figures(__file__, __doc__)
    print(f"torch {torch.__version__}, {args.threads} threads; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for preset in args.presets:
        root = args.work / preset
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        checkpoint, merged = root / "lerobot", root / "merged"
        written = run_part(["write", preset, str(checkpoint)], args.threads)
        weights = written["weights_gib"]
        print(f"{preset}: {written['params_b']:.2f} B parameters, {weights:.2f} GiB in bf16")
        figures.add(f"{preset}: parameters", written["params_b"], "B")
        figures.add(f"{preset}: weights in bf16", weights, "GiB")
        results = {"write": written, "sample": run_part(["sample", str(checkpoint)], args.threads),
                   "lora": run_part(["lora", str(checkpoint), str(merged)], args.threads),
                   "expert": run_part(["expert", str(checkpoint)], args.threads)}
        for name, result in results.items():
            times = ", ".join(f"{k[:-2]} {v:.1f} s (peak {result[k[:-2] + '_gib']:.1f} GiB)" for k, v in result.items() if k.endswith("_s"))
            extra = f", {result['trained_m']:.1f} M trained, loss {result['loss']}" if "trained_m" in result else ""
            print(f"{preset} {name:6s}: peak {result['peak_gib']:.2f} GiB ({result['peak_gib'] / weights:.2f}x the weights); {times}{extra}")
            part_figures(figures, f"{preset} {name}", result, f"{preset}: weights in bf16")
        shutil.rmtree(root, ignore_errors=True)
    figures.write(args.json, args)


def part_figures(figures: Figures, part: str, result: dict, weights: str) -> None:
    """A part's peak (against the weights' size: the baseline), each phase's time and peak, what it trained."""
    figures.add(f"{part}: peak", result["peak_gib"], "GiB", vs=weights)
    for key, seconds in result.items():
        if key.endswith("_s"):
            figures.add(f"{part}: {key[:-2]}", seconds, "s")
            figures.add(f"{part}: {key[:-2]}, peak", result[key[:-2] + "_gib"], "GiB", vs=weights)
    if "trained_m" in result:
        figures.add(f"{part}: trained", result["trained_m"], "M")
        figures.add(f"{part}: loss", result["loss"], "")


if __name__ == "__main__":
    main()
