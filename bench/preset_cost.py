"""What a bigger preset costs against tiny: the median time of one training step (forward, backward,
AdamW) at the Meta-World configuration's sizes (batch 32, two 96 px cameras, a 50-action chunk), the
presets measured round-robin in one run so that the machine's load moves them alike.

    .venv/bin/python bench/preset_cost.py                          # tiny against small
    .venv/bin/python bench/preset_cost.py --presets tiny,small,mini --repeats 3 --json data/bench/preset_cost.json

Prints each preset's parameters and median step time, and its ratio to the first preset.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.optimality import Label
from cfgrl.policy import NormStats, PI0Config, PI0Policy


def batch(config: PI0Config, size: int, image: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "images": {cam: torch.randint(0, 255, (size, image, image, 3), dtype=torch.uint8, generator=g) for cam in config.camera_names},
        "state": torch.randn(size, config.state_dim, generator=g),
        "actions": torch.randn(size, config.chunk_size, config.action_dim, generator=g),
        "action_is_pad": torch.zeros(size, config.chunk_size, dtype=torch.bool),
        "prompt": ["reach the goal"] * size,
        "o": torch.full((size,), int(Label.OPTIMAL)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    torch.set_num_threads(args.threads)
    names = args.presets.split(",")
    runs = {}
    for name in names:
        torch.manual_seed(0)
        config = PI0Config.from_preset(name, image_size=args.image_size)
        policy = PI0Policy(config, stats=NormStats.identity(config.state_dim, config.action_dim))
        runs[name] = (policy, torch.optim.AdamW(policy.parameters(), lr=1e-4), batch(config, args.batch, args.image_size))
    times = {name: [] for name in names}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, (policy, optimizer, data) in runs.items():
            start = time.perf_counter()
            policy.compute_loss(data).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - start)
    first = statistics.median(times[names[0]][1:])
    for name, (policy, _, _) in runs.items():
        median = statistics.median(times[name][1:])
        params = sum(p.numel() for p in policy.parameters())
        figures.add(f"{name}: parameters", params / 1e6, "M")
        figures.add(f"{name}: training step", median * 1e3, "ms", vs=() if name == names[0] else f"{names[0]}: training step")
        print(f"{name:>8}: {params / 1e6:6.2f} M parameters, {median * 1e3:8.1f} ms per step of {args.batch}, "
              f"{median / first:5.2f}x {names[0]}")
    figures.write(args.json, args)


if __name__ == "__main__":
    sys.exit(main())
