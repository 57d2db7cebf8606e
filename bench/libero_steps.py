"""LIBERO step rates on this machine, drawing as shipped and for the CPU (``env.mesh_grid_mm``).

    .venv/bin/python bench/libero_steps.py [--suite libero_spatial] [--steps 100] [--image-size 128] [--mesh-grid-mm 5] [--episodes 4] [--json OUT]

Twice, with LIBERO's meshes and render settings as shipped and then with ``env.mesh_grid_mm`` (coarser
meshes, no reflections, no multisampling): env creation + reset time, steps/s stepping alone and
rendering both cameras every step, then `cfgrl collect` of ``--episodes`` whole episodes with a fresh
tiny PI0 (one worker, both cameras rendered at every ``inference.replan_steps``-th step, start-up
included). The CPU drawing's figures carry their ratio to the as-shipped ones, measured in the same
run: the as-shipped run is what LIBERO collection cost before ``env.mesh_grid_mm`` reached it
(issue 36: target >= 2x collect env-steps/s).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it
from collect_throughput import through_collect

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


def env_figures(args: argparse.Namespace, grid: float, figures: Figures, label: str) -> None:
    """Start-up and step rates of one env drawing as ``label`` says."""
    start = time.perf_counter()
    env = LiberoEnv(EnvConfig(name="libero", suite=args.suite, image_size=args.image_size, mesh_grid_mm=grid))
    imported = time.perf_counter()
    env.reset(0, 0, seed=0)  # first reset: builds the simulator, compiles shaders
    first_reset = time.perf_counter()
    env.reset(0, 1, seed=0)  # a later reset of the same task: a soft reset
    second_reset = time.perf_counter()
    env.step(env.wait_action, render=False)  # numba compiles robosuite's controllers on the first step
    warm = time.perf_counter()
    print(f"== {label}: renderer={env.renderer} image_size={args.image_size} load_average={os.getloadavg()[0]:.1f}")
    print(f"import+benchmark {imported - start:.1f}s  first reset (creates env) {first_reset - imported:.1f}s  "
          f"later reset {second_reset - first_reset:.1f}s  first step {warm - second_reset:.1f}s")
    figures.machine[f"renderer ({label})"] = env.renderer
    for name, seconds in (("import+benchmark", imported - start), ("first reset (creates env)", first_reset - imported),
                          ("later reset", second_reset - first_reset), ("first step", warm - second_reset)):
        figures.add(f"{label}: {name}", seconds, "s")
    for render in (False, True):
        wall_ms, cpu_ms = timed_steps(env, args.steps, render)
        mode = "rendering both cameras every step" if render else "without rendering"
        print(f"{mode}: {1000 / wall_ms:.1f} steps/s ({wall_ms:.0f} ms/step wall, {cpu_ms:.0f} ms/step CPU)")
        for what, value, unit in (("steps/s", 1000 / wall_ms, "steps/s"), ("wall per step", wall_ms, "ms"), ("CPU per step", cpu_ms, "ms")):
            vs = [f"{label}: without rendering: {what}"] if render else []  # rendering's cost
            if grid:
                vs.append(f"{SHIPPED}: {mode}: {what}")  # the CPU drawing's gain
            figures.add(f"{label}: {mode}: {what}", value, unit, vs=tuple(vs))
    env.close()


def collect_figures(args: argparse.Namespace, grid: float, figures: Figures, label: str) -> None:
    env_args = ["-o", "env.name=libero", "-o", f"env.suite={args.suite}", "-o", f"env.image_size={args.image_size}",
                "-o", f"env.mesh_grid_mm={grid}", "-o", "env.tasks=[0]", "-o", "collect.group_size=2"]
    rate, steps, seconds, split = through_collect(env_args, [], args.episodes, 1)
    print(f"cfgrl collect, fresh tiny PI0, 1 worker: {rate:.1f} env-steps/s ({steps} steps in {seconds:.1f} s, start-up included)")
    print(f"  {split}")
    name = "cfgrl collect, fresh tiny PI0, 1 worker"
    figures.add(f"{label}: {name}", rate, "env-steps/s", vs=f"{SHIPPED}: {name}" if grid else (),
                target=">= 2x as shipped" if grid else None, headline=bool(grid))


SHIPPED = "as shipped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128, help="the LIBERO CPU demonstration's planned size")
    parser.add_argument("--mesh-grid-mm", type=float, default=5.0, help="env.mesh_grid_mm measured against drawing as shipped")
    parser.add_argument("--episodes", type=int, default=4, help="episodes of each collect run, in groups of 2 (0: no collect runs)")
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    for grid in (0.0, args.mesh_grid_mm):
        label = SHIPPED if not grid else f"env.mesh_grid_mm={grid:g}"
        env_figures(args, grid, figures, label)
        if args.episodes:
            collect_figures(args, grid, figures, label)
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
