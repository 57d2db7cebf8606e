"""Cost of classifier-free guidance at inference (PI0's and π0.5's tiny and mini presets, batch 1, two 224x224 cameras).

    .venv/bin/python bench/guided_sampling.py [--repeats 7] [--threads 2] [--json OUT]

Per preset, medians of: the prefix pass alone, a 10-step sample at w=1 (conditional branch only) and
at w=2 (both branches in one batched suffix pass per step). Reports the plain ratio t(w=2)/t(w=1) and
the guidance overhead (t(w=2) - t(w=1)) / (t(w=1) - t(prefix)): the extra cost measured in units of
one unguided suffix pass (10 steps). One more full suffix pass per step costs 1.0, which is the
minimum when compute-bound; the target is <= 1.1 on mini and pi05_mini. Also reports the pi0 and pi05
presets' bf16 parameter memory (built on the meta device, no weights allocated) and one tiny training
step. The last two lines are mini's and pi05_mini's overheads, π0.5 last.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.policy import ModelInputs, PI0Config
from cfgrl.policy.model import build_model


def interleaved_medians(fns: list, repeats: int) -> list[float]:
    """Median time of each function, measured round-robin so load drift hits all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def measure(preset: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = PI0Config.from_preset(preset, condition_mode="token", tokenizer="byte", vocab_size=259)
    model = build_model(cfg).eval()
    images = [torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1 for _ in cfg.camera_names]
    img_masks = [torch.ones(1, dtype=torch.bool) for _ in cfg.camera_names]
    tokens = torch.randint(3, cfg.vocab_size, (1, cfg.max_token_len))
    # a PI0 prompt of 20 tokens; π0.5's carries the state too ("Task: ..., State: 8 bins;\nAction: ", ~70)
    valid = 20 if cfg.family == "pi0" else 70
    lang_masks = torch.zeros(1, cfg.max_token_len, dtype=torch.bool)
    lang_masks[:, :valid] = True
    state = torch.randn(1, cfg.max_state_dim) if cfg.family == "pi0" else None
    inputs = ModelInputs(images, img_masks, tokens, lang_masks, state)
    noise = torch.randn(1, cfg.chunk_size, cfg.max_action_dim)

    def prefix_only():
        with torch.no_grad():
            model._prefix_cache(inputs, None, 1, 1)

    def sample(w):
        return lambda: model.sample_actions(inputs, noise=noise, cfg_scale=w)

    t_prefix, t_w1, t_w2 = interleaved_medians([prefix_only, sample(1.0), sample(2.0)], repeats)
    return {"prefix": t_prefix, "w1": t_w1, "w2": t_w2, "ratio": t_w2 / t_w1, "overhead": (t_w2 - t_w1) / (t_w1 - t_prefix)}


def tiny_training_step(repeats: int) -> float:
    """Median seconds of one forward+backward+AdamW step of the tiny preset (batch 1, 224x224, two cameras)."""
    from cfgrl.policy import PI0Policy

    torch.manual_seed(0)
    policy = PI0Policy(PI0Config.from_preset("tiny")).train()
    optimiser = torch.optim.AdamW(policy.configure_training(), lr=1e-4)
    batch = {
        "images": {cam: torch.randint(0, 256, (1, 224, 224, 3), dtype=torch.uint8) for cam in policy.config.camera_names},
        "state": torch.randn(1, 8), "prompt": ["put the bowl on the plate"], "actions": torch.randn(1, 50, 7),
        "action_is_pad": torch.zeros(1, 50, dtype=torch.bool), "o": torch.tensor([1]),
    }

    def step():
        loss = policy.compute_loss(batch).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return interleaved_medians([step], repeats)[0]


def bf16_gib(preset: str) -> float:
    with torch.device("meta"):
        model = build_model(PI0Config.from_preset(preset))
    return sum(p.numel() for p in model.parameters()) * 2 / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", nargs="+", default=["tiny", "mini", "pi05_tiny", "pi05_mini"])
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, 10 Euler steps, medians of {args.repeats}")
    for preset in ("pi0", "pi05"):
        gib = figures.add(f"{preset} preset parameters in bf16", bf16_gib(preset), "GiB")
        print(f"{preset} preset parameters in bf16: {gib:.2f} GiB (activations and KV cache come on top)")
    step_ms = figures.add("tiny: training step (batch 1)", tiny_training_step(args.repeats) * 1e3, "ms")
    print(f"tiny: training step (batch 1) {step_ms:.1f} ms")
    results = {}
    for preset in args.presets:
        r = results[preset] = measure(preset, args.repeats)
        print(f"{preset}: prefix {r['prefix'] * 1e3:.1f} ms, w=1 {r['w1'] * 1e3:.1f} ms, w=2 {r['w2'] * 1e3:.1f} ms, "
              f"ratio t(w=2)/t(w=1) {r['ratio']:.3f}, guidance overhead {r['overhead']:.3f}")
        figures.add(f"{preset}: prefix only", r["prefix"] * 1e3, "ms")
        figures.add(f"{preset}: sample at w=1", r["w1"] * 1e3, "ms")
        figures.add(f"{preset}: sample at w=2", r["w2"] * 1e3, "ms", vs=f"{preset}: sample at w=1")  # the ratio t(w=2)/t(w=1)
    for family_mini in ("mini", "pi05_mini"):  # π0.5 last
        if family_mini in results:
            print(f"guidance overhead ({family_mini}): {results[family_mini]['overhead']:.3f}")
    for preset, r in results.items():  # in units of one unguided suffix pass: a ratio the script defines, not of two figures
        figures.add(f"{preset}: guidance overhead", r["overhead"], "unguided suffix passes",
                    target="<= 1.1" if preset in ("mini", "pi05_mini") else None, headline=preset == "mini")
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
