"""Does a policy use the prompt? The share of first action chunks heading for the NAMED ball.

    .venv/bin/python scripts/first_heading.py POLICY_DIR [--cfg-scale W] [--samples 4] [--init-states 0-49]

For every task of the built-in `reach` suite and the given init states (default: the held-out 0-49 of
configs/builtin.yaml), the policy samples its first chunk from the reset observation; the mean (x, y) of its first 10 actions is compared with the
direction to each ball. A policy that ignores the prompt picks the named ball about 1 time in 4
(four balls); the scripted expert at noise N picks it with probability 1 - N.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cfgrl.config import EnvConfig
from cfgrl.envs.builtin import BuiltinEnv
from cfgrl.policy import PI0Policy

LOOK_AHEAD = 10  # actions averaged into the heading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy")
    parser.add_argument("--cfg-scale", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=4, help="flow-noise samples per (task, init state)")
    parser.add_argument("--init-states", default="0-49", help="first-last init states probed (default: the held-out 0-49)")
    args = parser.parse_args()
    first, last = (int(i) for i in args.init_states.split("-"))
    init_states = range(first, last + 1)
    torch.manual_seed(0)
    policy = PI0Policy.from_pretrained(args.policy).eval()
    env = BuiltinEnv(EnvConfig(image_size=policy.config.image_size))
    hits = total = 0
    for task in env.tasks():
        for init in init_states:
            obs = env.reset(task.task_id, init, seed=0)
            sim = env._sim
            batch = {"images": {k: np.repeat(v[None], args.samples, 0) for k, v in obs.images.items()},
                     "state": np.repeat(obs.state[None], args.samples, 0), "prompt": [obs.prompt] * args.samples}
            headings = policy.sample_actions(batch, cfg_scale=args.cfg_scale).numpy()[:, :LOOK_AHEAD, :2].mean(1)
            to_balls = sim.balls - sim.pos
            to_balls /= np.linalg.norm(to_balls, axis=1, keepdims=True)
            chosen = np.argmax(headings @ to_balls.T, axis=1)  # the ball whose direction is closest
            hits += int((chosen == sim.target).sum())
            total += args.samples
    print(f"first chunks heading for the named ball: {hits}/{total} = {hits / total:.2f} (ignoring the prompt: ~0.25)")


if __name__ == "__main__":
    main()
