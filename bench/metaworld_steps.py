"""Meta-World step rates: the env alone (rendering at the policy's query steps) and `cfgrl collect`.

    .venv/bin/python bench/metaworld_steps.py [--suite MT10] [--image-size 96] [--steps 1000] [--episodes 16] [--mesh-grid-mm 10] [--envs-per-worker 1,4] [--json OUT]

Prints, for one process and one env with random actions, render ms per frame of each camera (fast
settings against the scene defaults, a few frames), steps/s without rendering and with both cameras
rendered every ``--replan``-th step (target >= 300 steps/s per process); then `cfgrl collect` into a
temporary store with 2 workers holding each of ``--envs-per-worker`` environments and a fresh tiny
policy, env-steps/s with start-up (building the benchmark in the main process, spawning the workers)
included (target >= 200), and the collector's time split. All of it twice: with the arm's meshes as
shipped, then with ``env.mesh_grid_mm``, and the ratios against the first collect run (meshes as
shipped, the first ``--envs-per-worker``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import Figures, add_json_option
from collect_throughput import through_collect  # bench/ is on the path of a script run from it

from cfgrl.config import EnvConfig
from cfgrl.envs.metaworld import MetaWorldEnv


def render_ms(env: MetaWorldEnv, frames: int, defaults: bool) -> dict[str, float]:
    """ms per frame of each camera with the env's settings, and (``defaults``) with the scene defaults."""
    import mujoco

    timings = {}
    for camera in env.camera_names:
        env.raw_frame(camera)
        started = time.perf_counter()
        for _ in range(frames):
            env.raw_frame(camera)
        timings[camera] = 1000 * (time.perf_counter() - started) / frames
    if not defaults:
        return timings
    default_sim = type(env._sim)()  # an untouched model: 4096-px shadow maps, reflectance, 4x multisampling
    renderer = mujoco.Renderer(default_sim.model, env.image_size, env.image_size)
    for camera in env.camera_names:
        renderer.update_scene(default_sim.data, camera=camera)
        renderer.render()
        started = time.perf_counter()
        for _ in range(frames):
            renderer.update_scene(default_sim.data, camera=camera)
            renderer.render()
        timings[f"{camera} (scene defaults)"] = 1000 * (time.perf_counter() - started) / frames
    renderer.close()
    default_sim.close()
    return timings


def steps_per_second(env: MetaWorldEnv, steps: int, render_every: int | None) -> float:
    """Random actions over every task in turn, a new configuration at each episode's end. Every
    task's simulator is opened before the clock starts (a worker keeps them open: opening one is a
    start-up cost, which the collect figure below includes)."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 7)).astype(np.float32)
    tasks = env.tasks()
    for task_id in range(len(tasks)):
        env.reset(task_id, 0, 0)
    episode = in_episode = 0
    env.reset(0, 0, 0)
    started = time.perf_counter()
    for i in range(steps):
        result = env.step(actions[i], render=render_every is not None and in_episode % render_every == render_every - 1)
        in_episode += 1
        if result.success or in_episode >= env.max_steps:
            episode, in_episode = episode + 1, 0
            env.reset(episode % len(tasks), episode % 50, episode)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="MT10")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=1000, help="env-alone steps per mode")
    parser.add_argument("--replan", type=int, default=5, help="render every N-th step (the policy's query steps)")
    parser.add_argument("--frames", type=int, default=5, help="frames per render timing")
    parser.add_argument("--episodes", type=int, default=16, help="episodes of each collect run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mesh-grid-mm", type=float, default=10.0, help="env.mesh_grid_mm measured against the meshes as shipped")
    parser.add_argument("--envs-per-worker", default="1,4", help="collect.envs_per_worker values to measure, comma-separated")
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    env_counts = [int(n) for n in args.envs_per_worker.split(",")]

    alone_rates: dict[float, float] = {}  # mesh grid -> env alone, rendering
    collect_rates: dict[tuple[float, int], float] = {}  # (mesh grid, envs per worker) -> collect
    for grid in (0.0, args.mesh_grid_mm):
        meshes = "meshes as shipped" if not grid else f"env.mesh_grid_mm={grid:g}"
        started = time.perf_counter()
        env = MetaWorldEnv(EnvConfig(name="metaworld", suite=args.suite, image_size=args.image_size, mesh_grid_mm=grid))
        env.reset(0, 0, 0)  # builds the benchmark's configurations and the first task's simulator
        built = figures.add(f"{meshes}: {args.suite} built and first reset", time.perf_counter() - started, "s")
        figures.machine["renderer"] = env.renderer
        print(f"== {meshes}: renderer={env.renderer} image_size={args.image_size} load_average={os.getloadavg()[0]:.1f}; "
              f"{args.suite} built and first reset in {built:.1f} s")
        renders = render_ms(env, args.frames, defaults=not grid)
        print("render ms/frame: " + ", ".join(f"{name} {ms:.1f}" for name, ms in renders.items()))
        for name, ms in renders.items():
            figures.add(f"{meshes}: render {name}", ms, "ms/frame", vs=() if not grid else f"meshes as shipped: render {name}")
        still = figures.add(f"{meshes}: env alone, no rendering", steps_per_second(env, args.steps, None), "steps/s",
                            vs=() if not grid else "meshes as shipped: env alone, no rendering")
        print(f"env alone, no rendering:                        {still:8.0f} steps/s")
        alone = steps_per_second(env, args.steps, args.replan)
        print(f"env alone, both cameras every {args.replan}th step:          {alone:8.0f} steps/s (target >= 300)")
        figures.add(f"{meshes}: env alone, both cameras every {args.replan}th step", alone, "steps/s", target=">= 300",
                    vs=() if not grid else f"meshes as shipped: env alone, both cameras every {args.replan}th step")
        env.close()

        env_args = ["-o", "env.name=metaworld", "-o", f"env.suite={args.suite}", "-o", f"env.image_size={args.image_size}",
                    "-o", f"env.mesh_grid_mm={grid}", "-o", f"inference.replan_steps={args.replan}", "-o", "collect.group_size=2"]
        alone_rates[grid] = alone
        for envs in env_counts:
            rate, n, seconds, split = through_collect([*env_args, "-o", f"collect.envs_per_worker={envs}"], [], args.episodes, args.workers)
            print(f"cfgrl collect, fresh tiny PI0, {args.workers} workers x {envs} envs: {rate:8.0f} env-steps/s "
                  f"({n} steps in {seconds:.1f} s, start-up included; target >= 200)")
            print(f"  {split}")
            collect_rates[grid, envs] = rate
            first = f"meshes as shipped: cfgrl collect, {args.workers} workers x {env_counts[0]} envs"
            name = f"{meshes}: cfgrl collect, {args.workers} workers x {envs} envs"
            figures.add(name, rate, "env-steps/s", target=">= 200", vs=() if name == first else first,
                        headline=bool(grid) and envs == env_counts[-1])
            figures.add(f"{name}: steps", n, "steps")
            figures.add(f"{name}: seconds, start-up included", seconds, "s")
    print(f"env.mesh_grid_mm={args.mesh_grid_mm:g} against meshes as shipped: env alone x{alone_rates[args.mesh_grid_mm] / alone_rates[0.0]:.2f}")
    baseline = collect_rates[0.0, env_counts[0]]
    for (grid, envs), rate in collect_rates.items():
        print(f"collect, env.mesh_grid_mm={grid:g}, {envs} envs per worker: x{rate / baseline:.2f} against meshes as shipped, {env_counts[0]} per worker")
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
