"""Rollout throughput: the environment alone, and the whole `cfgrl collect` command.

    .venv/bin/python bench/collect_throughput.py                     # builtin: env alone + collect
    .venv/bin/python bench/collect_throughput.py --env libero --suite libero_spatial --image-size 224 \
        --episodes 16 --group-size 2
    .venv/bin/python bench/collect_throughput.py --json data/bench/collect_throughput.json   # also the figures as JSON

Numbers are control steps per second. "env alone" is one process stepping with random actions
(images rendered at the policy's query steps only, as the engine does, and again rendering every
step for comparison). "collect" runs the real command into a temporary store and divides the
steps it committed by its wall time, start-up included; under each run, the collector's time split,
and last the share of the scripted collection's time spent storing episodes (target < 20%).
The LIBERO comparison the project tracks is `collect` (2 workers, tiny policy) against the plain
loop rendering both cameras every step: ``compare_with_plain_loop``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.config import EnvConfig
from cfgrl.envs import make_env
from cfgrl.store import Store


def env_alone(env_cfg: EnvConfig, steps: int, render_every: int) -> float:
    """Steps/s of one env in this process, random actions, rendering every ``render_every`` steps."""
    env = make_env(env_cfg)
    task = env.tasks()[0]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 7)).astype(np.float32)
    env.reset(task.task_id, 0, 0)
    started, done_in_episode = time.perf_counter(), 0
    for i in range(steps):
        result = env.step(actions[i], render=(i % render_every == render_every - 1))
        done_in_episode += 1
        if result.success or done_in_episode >= task.max_steps:
            env.reset(task.task_id, (i // task.max_steps) % task.num_init_states, i)
            done_in_episode = 0
    rate = steps / (time.perf_counter() - started)
    env.close()
    return rate


def through_collect(env_args: list[str], policy: list[str], episodes: int, workers: int,
                    code: Path | None = None) -> tuple[float, int, float, str]:
    """(steps/s, steps, seconds, the collector's time-split line) of `cfgrl collect` into a fresh store;
    ``code``: a checkout whose cfgrl runs instead of the installed one (``python -m`` imports from its cwd first)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        command = [sys.executable, "-m", "cfgrl.cli", "collect", str(store), *policy, "--episodes", str(episodes),
                   "--workers", str(workers), *env_args]
        started = time.perf_counter()
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=code)
        seconds = time.perf_counter() - started
        steps = Store(store).num_steps
    split = next((line for line in done.stdout.splitlines() if line.startswith("collector time:")), "")
    return steps / seconds, steps, seconds, split


def plain_loop(args: tuple[EnvConfig, int]) -> tuple[int, float]:
    """One process of the plain loop: whole episodes (settle steps, then random actions until
    ``max_steps``), rendering both cameras at every step; (steps, seconds), env start-up excluded."""
    env_cfg, episodes = args
    env = make_env(env_cfg)
    task = env.tasks()[0]
    actions = np.random.default_rng(0).uniform(-1, 1, size=(task.max_steps, 7)).astype(np.float32)
    env.reset(task.task_id, 0, 0)  # the first reset builds the simulator: start-up, not timed
    steps, started = 0, time.perf_counter()
    for episode in range(episodes):
        env.reset(task.task_id, episode % task.num_init_states, episode)
        for _ in range(env.num_wait_steps):
            env.step(env.wait_action, render=True)
        for action in actions:
            env.step(action, render=True)
        steps += env.num_wait_steps + len(actions)
    seconds = time.perf_counter() - started
    env.close()
    return steps, seconds


def compare_with_plain_loop(env_cfg: EnvConfig, env_args: list[str], episodes: int, workers: int, plain_episodes: int,
                            figures: Figures) -> None:
    """The tracked comparison: `cfgrl collect` with ``workers`` workers and a fresh tiny policy against
    a plain loop in the same number of processes, each stepping the env and rendering every camera at
    every step. Both play whole episodes of the same length (a fresh policy never succeeds early).
    The plain rate excludes start-up; the collect rate includes it (pessimistic)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        runs = pool.map(plain_loop, [(env_cfg, plain_episodes)] * workers)
    plain = sum(steps / seconds for steps, seconds in runs)
    rate, n, seconds, split = through_collect(env_args, [], episodes, workers)
    print(f"plain loop, {workers} processes, every camera every step: {plain:8.2f} steps/s")
    print(f"cfgrl collect, {workers} workers, fresh tiny PI0: {rate:8.2f} steps/s ({n} steps in {seconds:.1f} s, start-up included)")
    print(f"  {split}")
    print(f"collect / plain loop: {rate / plain:.2f}x (target >= 3x)")
    baseline = f"plain loop, {workers} processes, every camera every step"
    figures.add(baseline, plain, "steps/s")
    collect_figures(figures, f"cfgrl collect, {workers} workers, fresh tiny PI0", rate, n, seconds, vs=baseline, target=">= 3x",
                    headline=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="builtin", choices=["builtin", "libero"])
    parser.add_argument("--suite", default="reach")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20000, help="builtin: env-alone steps")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per collect run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8, help="K of the collect runs")
    parser.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the suite's)")
    parser.add_argument("--plain-episodes", type=int, default=1, help="LIBERO: episodes per process of the plain loop")
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    env_cfg = EnvConfig(name=args.env, suite=args.suite, image_size=args.image_size)
    env_args = ["-o", f"env.name={args.env}", "-o", f"env.suite={args.suite}", "-o", f"env.image_size={args.image_size}"]
    if args.max_steps is not None:
        env_cfg.max_steps = args.max_steps
        env_args += ["-o", f"env.max_steps={args.max_steps}"]
    env_args += ["-o", f"collect.group_size={args.group_size}"]
    if args.env == "libero":
        compare_with_plain_loop(env_cfg, env_args, args.episodes, args.workers, args.plain_episodes, figures)
        figures.write(args.json, args)
        return
    alone = figures.add("builtin env alone, render at query steps (every 5th)", env_alone(env_cfg, args.steps, 5), "steps/s")
    print(f"builtin env alone, render at query steps (every 5th): {alone:8.0f} steps/s")
    alone = figures.add("builtin env alone, render every step", env_alone(env_cfg, args.steps, 1), "steps/s")
    print(f"builtin env alone, render every step:                 {alone:8.0f} steps/s")
    rate, n, seconds, scripted_split = through_collect(env_args, ["--policy", "scripted:0.3"], args.episodes, args.workers)
    print(f"cfgrl collect, scripted expert, {args.workers} workers: {rate:8.0f} steps/s ({n} steps in {seconds:.1f} s, start-up included)")
    print(f"  {scripted_split}")
    collect_figures(figures, f"cfgrl collect, scripted expert, {args.workers} workers", rate, n, seconds)
    rate, n, seconds, split = through_collect(env_args, [], max(2, args.episodes // 8), args.workers)
    print(f"cfgrl collect, fresh tiny PI0, {args.workers} workers:  {rate:8.0f} steps/s ({n} steps in {seconds:.1f} s, start-up included)")
    print(f"  {split}")
    collect_figures(figures, f"cfgrl collect, fresh tiny PI0, {args.workers} workers", rate, n, seconds)
    share = re.search(r"storing episodes [\d.]+ s \((\d+)%\)", scripted_split)
    print(f"storing share of the scripted collection: {share.group(1) if share else '?'}% (target < 20%)")
    if share:  # the collector printed no split: no figure rather than a '?'
        figures.add("storing share of the scripted collection", int(share.group(1)), "%", target="< 20%", headline=True)
    figures.write(args.json, args)


def collect_figures(figures: Figures, name: str, rate: float, steps: int, seconds: float, **rate_figure) -> None:
    """One `cfgrl collect` run's figures; ``rate_figure``: what else its rate carries (a baseline, a target)."""
    figures.add(name, rate, "steps/s", **rate_figure)
    figures.add(f"{name}: steps", steps, "steps")
    figures.add(f"{name}: seconds, start-up included", seconds, "s")


if __name__ == "__main__":
    main()
