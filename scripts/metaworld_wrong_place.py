"""Where a store's Meta-World episodes went: to the task's target, or to the noisy expert's wrong place.

    python scripts/metaworld_wrong_place.py data/metaworld/demo/demos.zarr data/metaworld/demo/rounds/round_001/rollouts.zarr

For the tasks whose configuration vector starts with the object's position and ends with the goal's
(reach, push, pick-place), it counts per outcome the episodes whose hand came within 4 cm (in x, y) of
the target (the goal for reach, the object otherwise) and of the wrong place the noisy expert aims at
(the target moved by ``WRONG_PLACE``). It reads the store only: the hand's x, y are the state's first
two numbers, the configuration is the store's ``init_config``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cfgrl.envs.metaworld import WRONG_PLACE, suite_tasks
from cfgrl.store import Store

TARGETS = {"reach-v3": slice(3, 5), "push-v3": slice(0, 2), "pick-place-v3": slice(0, 2)}  # x, y in the configuration vector
NEAR = 0.04  # metres


def visits(store: Store, episode: int, target: np.ndarray) -> tuple[bool, bool]:
    """Whether the hand came near the target, and near the wrong place."""
    hand = store.episode_steps(episode, "state")[:, :2]
    closest = [np.linalg.norm(hand - point, axis=1).min() for point in (target, target + np.asarray(WRONG_PLACE))]
    return closest[0] < NEAR, closest[1] < NEAR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+")
    args = parser.parse_args()
    for path in args.stores:
        store = Store(path)
        ep = store.episodes
        print(path)
        for task_id, name in enumerate(suite_tasks(str(ep.suite.iloc[0]))):
            if name not in TARGETS:
                continue
            for success in (True, False):
                rows = np.where((ep.task_id.values == task_id) & (ep.success.values == success))[0]
                seen = np.array([visits(store, int(i), np.array(json.loads(ep.init_config.iloc[i]))[TARGETS[name]])
                                 for i in rows], dtype=bool).reshape(-1, 2)
                target, wrong = seen.sum(axis=0)
                print(f"  {name:14s} {'succeeded' if success else 'failed':9s} {len(rows):4d} episodes: "
                      f"{target:4d} near the target, {wrong:4d} near the wrong place")


if __name__ == "__main__":
    main()
