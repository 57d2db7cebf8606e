"""Success of Meta-World's scripted experts over every configuration of a benchmark, without rendering.

    python scripts/metaworld_experts.py                  # MT10, benchmark seed 0: 10 tasks x 50 configurations
    python scripts/metaworld_experts.py --suite MT50

Each episode runs the task's expert (``metaworld.policies``) closed-loop on the raw Meta-World env from
one fixed configuration, for at most 500 steps (Meta-World's limit); success is any success step. It
prints the success per task and overall, and how many episodes succeed within 200 steps (cfgrl's
default ``env.max_steps``). The experts as they are: their noisy versions (``--policy scripted:NOISE``)
are measured by ``cfgrl collect``, which prints their success.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cfgrl.envs.base import select_mujoco_gl
from cfgrl.envs.metaworld import MAX_STEPS, PROMPTS, build_configurations, suite_tasks


def run_task(name: str, vectors: np.ndarray) -> list[int | None]:
    """The first success step of each configuration's episode (None: no success within MAX_STEPS)."""
    import pickle

    import metaworld.env_dict
    from metaworld.policies import ENV_POLICY_MAP
    from metaworld.types import Task

    env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[name]()
    expert = ENV_POLICY_MAP[name]()
    firsts = []
    for vec in vectors:
        env.set_task(Task(env_name=name, data=pickle.dumps({"rand_vec": vec, "env_cls": type(env), "partially_observable": False})))
        obs, _ = env.reset()
        first = None
        for step in range(1, MAX_STEPS + 1):
            action = np.clip(expert.get_action(obs), -1.0, 1.0)
            obs, _, _, _, info = env.step(action)
            if info["success"]:
                first = step
                break
        firsts.append(first)
    env.close()
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="MT10")
    parser.add_argument("--benchmark-seed", type=int, default=0)
    args = parser.parse_args()
    select_mujoco_gl("Meta-World")
    started = time.perf_counter()
    configurations = build_configurations(args.suite, args.benchmark_seed)
    print(f"{args.suite}(seed={args.benchmark_seed}) built in {time.perf_counter() - started:.1f} s")
    total = within_200 = episodes = 0
    for name in suite_tasks(args.suite):
        firsts = run_task(name, configurations.vectors[name])
        wins = [f for f in firsts if f is not None]
        total, episodes = total + len(wins), episodes + len(firsts)
        within_200 += sum(f <= 200 for f in wins)
        steps = f"median {int(np.median(wins))} steps" if wins else "-"
        print(f"{name:28s} {len(wins):3d}/{len(firsts)}  ({steps}; '{PROMPTS[name]}')", flush=True)
    print(f"overall {total}/{episodes} = {total / episodes:.1%} within {MAX_STEPS} steps; "
          f"{within_200}/{episodes} = {within_200 / episodes:.1%} within 200; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
