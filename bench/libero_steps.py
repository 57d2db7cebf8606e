"""LIBERO step rates on this machine: robosuite's substeps and LIBERO's drawing as shipped, cfgrl's, and the CPU drawing.

    .venv/bin/python bench/libero_steps.py [--suite libero_spatial] [--steps 100] [--image-size 128] [--mesh-grid-mm 5] [--episodes 8] [--baseline-rev 44e9b6b^] [--json OUT]

In one process, with LIBERO's meshes and render settings as shipped and then with ``env.mesh_grid_mm``
(coarser meshes, no reflections, no multisampling): env creation + reset time, steps/s stepping alone
(also with robosuite's own substep loop, three forward passes per substep where ``LiberoEnv.step``
runs one) and rendering both cameras every step. Then `cfgrl collect` of ``--episodes`` whole
episodes with a fresh tiny PI0 (one worker, both cameras rendered at every
``inference.replan_steps``-th step, start-up included): first the code of ``--baseline-rev`` (a git
worktree; by default the commit before issue 36's speed work), then this checkout drawing as shipped
and with ``env.mesh_grid_mm``, each as a ratio to the baseline measured in the same run (issue 36:
target >= 2x collect env-steps/s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it
from collect_throughput import through_collect

from cfgrl.config import EnvConfig
from cfgrl.envs import libero
from cfgrl.envs.libero import LiberoEnv

SHIPPED = "drawing as shipped"
ROBOSUITE = "robosuite's substep loop"
COLLECT = "cfgrl collect, fresh tiny PI0, 1 worker"



def timed_steps(env: LiberoEnv, steps: int, render: bool) -> tuple[float, float]:
    """(wall ms, process CPU ms) per step; CPU time, all threads included, is less sensitive to other load."""
    rng = np.random.default_rng(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        action = np.append(rng.uniform(-0.3, 0.3, 6), -1.0)  # small random motions, gripper open
        env.step(action, render=render)
    return 1000 * (time.perf_counter() - wall) / steps, 1000 * (time.process_time() - cpu) / steps


def add_step_figures(figures: Figures, label: str, mode: str, wall_ms: float, cpu_ms: float, vs: tuple[str, ...]) -> None:
    """steps/s, wall and CPU ms per step; ``vs``: the labels/modes (``"label: mode"``) each is a ratio to."""
    print(f"{label}, {mode}: {1000 / wall_ms:.1f} steps/s ({wall_ms:.0f} ms/step wall, {cpu_ms:.0f} ms/step CPU)")
    for what, value, unit in (("steps/s", 1000 / wall_ms, "steps/s"), ("wall per step", wall_ms, "ms"), ("CPU per step", cpu_ms, "ms")):
        figures.add(f"{label}: {mode}: {what}", value, unit, vs=tuple(f"{base}: {what}" for base in vs))


def env_figures(args: argparse.Namespace, grid: float, figures: Figures, label: str) -> None:
    """Start-up and step rates of one env drawing as ``label`` says (as shipped: robosuite's substep loop too)."""
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
    alone, drawn = "without rendering", "rendering both cameras every step"
    if not grid:  # the physics as robosuite runs it, the baseline of LiberoEnv.step's split substeps
        with mock.patch.object(libero, "one_forward_per_substep", lambda sim: contextlib.nullcontext()):
            add_step_figures(figures, ROBOSUITE, alone, *timed_steps(env, args.steps, render=False), vs=())
    add_step_figures(figures, label, alone, *timed_steps(env, args.steps, render=False),
                     vs=(f"{ROBOSUITE}: {alone}",) if not grid else (f"{SHIPPED}: {alone}",))
    add_step_figures(figures, label, drawn, *timed_steps(env, args.steps, render=True),
                     vs=(f"{label}: {alone}",) + ((f"{SHIPPED}: {drawn}",) if grid else ()))  # rendering's cost; the drawing's gain
    env.close()


def collect_figures(args: argparse.Namespace, figures: Figures) -> None:
    """`cfgrl collect` env-steps/s: the baseline commit's code, then this checkout's at both drawings."""
    runs = [(f"commit {args.baseline_rev}", 0.0), (SHIPPED, 0.0), (f"env.mesh_grid_mm={args.mesh_grid_mm:g}", args.mesh_grid_mm)]
    with baseline_checkout(args.baseline_rev) as old_code:
        for index, (label, grid) in enumerate(runs):
            env_args = ["-o", "env.name=libero", "-o", f"env.suite={args.suite}", "-o", f"env.image_size={args.image_size}",
                        "-o", f"env.mesh_grid_mm={grid}", "-o", "env.tasks=[0]", "-o", "collect.group_size=2"]
            rate, steps, seconds, split = through_collect(env_args, [], args.episodes, 1, code=old_code if index == 0 else None)
            print(f"== {label}: {COLLECT}: {rate:.1f} env-steps/s ({steps} steps in {seconds:.1f} s, start-up included)")
            print(f"  {split}")
            figures.add(f"{label}: {COLLECT}", rate, "env-steps/s", vs=f"{runs[0][0]}: {COLLECT}" if index else (),
                        target=f">= 2x commit {args.baseline_rev}" if grid else None, headline=bool(grid))


@contextlib.contextmanager
def baseline_checkout(rev: str) -> Iterator[Path]:
    """A detached git worktree of ``rev`` (removed afterwards); its cfgrl runs on this environment's packages."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128, help="the LIBERO CPU demonstration's size")
    parser.add_argument("--mesh-grid-mm", type=float, default=5.0, help="env.mesh_grid_mm measured against drawing as shipped")
    parser.add_argument("--episodes", type=int, default=8, help="episodes of each collect run, in groups of 2 (0: no collect runs)")
    parser.add_argument("--baseline-rev", default="44e9b6b^",
                        help="the commit whose `cfgrl collect` the others are measured against (default: before issue 36's speed work)")
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    for grid in (0.0, args.mesh_grid_mm):
        env_figures(args, grid, figures, SHIPPED if not grid else f"env.mesh_grid_mm={grid:g}")
    if args.episodes:
        collect_figures(args, figures)
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
