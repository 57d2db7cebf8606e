"""LIBERO step rate on this machine: stepping alone vs. stepping and rendering both cameras every step.

    .venv/bin/python bench/libero_steps.py [--suite libero_spatial] [--steps 100] [--image-size 224] [--json OUT]

Prints env creation + reset time, then steps/s for each mode (one process, one env). The collector
renders only at policy query steps (every replan_steps-th step), so its rate lies between the two.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.config import EnvConfig
from cfgrl.envs.libero import LiberoEnv


def timed_steps(env: LiberoEnv, steps: int, render: bool) -> tuple[float, float]:
    """(wall ms, process CPU ms) per step; CPU time, all threads included, is less sensitive to other load."""
    rng = np.random.default_rng(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        action = np.append(rng.uniform(-0.3, 0.3, 6), -1.0)  # small random motions, gripper open
        env.step(action, render=render)
    return 1000 * (time.perf_counter() - wall) / steps, 1000 * (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=224)
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)

    start = time.perf_counter()
    env = LiberoEnv(EnvConfig(name="libero", suite=args.suite, image_size=args.image_size))
    imported = time.perf_counter()
    env.reset(0, 0, seed=0)  # first reset: builds the simulator, compiles shaders
    first_reset = time.perf_counter()
    env.reset(0, 1, seed=0)  # a later reset of the same task: LIBERO's hard reset rebuilds the scene
    second_reset = time.perf_counter()
    env.step(env.wait_action, render=False)  # numba compiles robosuite's controllers on the first step
    warm = time.perf_counter()
    print(f"renderer={env.renderer} image_size={args.image_size} load_average={os.getloadavg()[0]:.1f}")
    print(f"import+benchmark {imported - start:.1f}s  first reset (creates env) {first_reset - imported:.1f}s  "
          f"later reset {second_reset - first_reset:.1f}s  first step {warm - second_reset:.1f}s")
    figures.machine["renderer"] = env.renderer
    for name, seconds in (("import+benchmark", imported - start), ("first reset (creates env)", first_reset - imported),
                          ("later reset", second_reset - first_reset), ("first step", warm - second_reset)):
        figures.add(name, seconds, "s")
    for render in (False, True):
        wall_ms, cpu_ms = timed_steps(env, args.steps, render)
        label = "rendering both cameras every step" if render else "without rendering"
        print(f"{label}: {1000 / wall_ms:.1f} steps/s ({wall_ms:.0f} ms/step wall, {cpu_ms:.0f} ms/step CPU)")
        for what, value, unit in (("steps/s", 1000 / wall_ms, "steps/s"), ("wall per step", wall_ms, "ms"), ("CPU per step", cpu_ms, "ms")):
            figures.add(f"{label}: {what}", value, unit, vs=f"without rendering: {what}" if render else ())  # rendering's cost
    env.close()
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
