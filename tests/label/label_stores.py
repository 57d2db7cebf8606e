"""Small real Zarr stores with rewards, outcomes and groups chosen by each test (a uniquely named
module: every test folder has its own conftest, and "from conftest import" would pick whichever
was imported first)."""

from dataclasses import dataclass, field

import numpy as np

from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter

LAYOUT = StoreLayout(("agentview", "wrist"), (4, 4, 3), 8, 7)
REPLAN = 5


@dataclass
class Ep:
    """One episode: its rewards (one per step, wait steps included) and its group."""

    rewards: list[float]
    group: int
    task: int = 0
    success: bool | None = None  # default: the last reward is 1
    wait: int = 0
    extra: dict = field(default_factory=dict)


def episode_data(ep: Ep, seed: int) -> EpisodeData:
    length = len(ep.rewards)
    rng = np.random.default_rng(seed)
    query = np.arange(ep.wait, length, REPLAN)  # the policy's query steps: frames are stored there only
    success = bool(ep.rewards[-1] == 1.0) if ep.success is None else ep.success
    done = np.zeros(length, bool)
    done[-1] = success
    meta = dict(num_wait_steps=ep.wait, task_id=ep.task, init_state_id=ep.group, group_id=ep.group,
                rollout_index=seed, seed=seed, success=success, cfg_scale=1.0, env="builtin", suite="reach",
                prompt=f"task {ep.task}", policy_id="p", run_id="r", renderer="numpy", init_config="[]")
    meta.update(ep.extra)
    return EpisodeData(
        state=rng.normal(size=(length, 8)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
        reward=np.asarray(ep.rewards, np.float32),
        done=done,
        is_wait=np.arange(length) < ep.wait,
        frames={cam: rng.integers(0, 255, size=(len(query), 4, 4, 3), dtype=np.uint8) for cam in LAYOUT.camera_names},
        frame_step=query,
        meta=meta,
    )


def write_store(path, episodes: list[Ep]) -> Store:
    with StoreWriter(path, LAYOUT, commit_seconds=1e9) as writer:  # one commit: fast
        for i, ep in enumerate(episodes):
            writer.append(episode_data(ep, i))
    return Store(path)


def sparse(length: int, success: bool) -> list[float]:
    """LIBERO's reward: 1 on the success step (the last), else 0."""
    rewards = [0.0] * length
    if success:
        rewards[-1] = 1.0
    return rewards
