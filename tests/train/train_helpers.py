"""Small real stores and label indexes for the trainer's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfgrl.config import CFGRLConfig
from cfgrl.label import make_label_index
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter

CAMERAS = ("agentview", "wrist")
REPLAN = 5
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)


def make_episode(index: int, length: int, image: int, success: bool, group_size: int, wait: int = 0) -> EpisodeData:
    """A learnable episode: constant state, actions a fixed function of it, images that encode it; the
    first ``wait`` steps are LIBERO-style wait steps (the "do nothing" action, no frame)."""
    rng = np.random.default_rng(index)
    state = np.tile(rng.normal(size=8).astype(np.float32), (length, 1))
    action = np.tile(np.tanh(state[0, :7] * 1.5), (length, 1)).astype(np.float32)
    action[:wait] = WAIT_ACTION
    reward, done = np.zeros(length, np.float32), np.zeros(length, bool)
    if success:
        reward[-1], done[-1] = 1.0, True
    query = np.arange(wait, length, REPLAN)
    frames = {cam: np.broadcast_to((rng.integers(0, 255, size=(1, image, image, 3))).astype(np.uint8),
                                   (len(query), image, image, 3)).copy() for cam in CAMERAS}
    return EpisodeData(
        state=state, action=action, reward=reward, done=done, is_wait=np.arange(length) < wait, frames=frames,
        frame_step=query,
        meta=dict(num_wait_steps=wait, task_id=(index // group_size) % 2, init_state_id=index // group_size, group_id=index // group_size,
                  rollout_index=index % group_size, seed=index, success=success, cfg_scale=1.0, env="builtin",
                  suite="reach", prompt=f"reach target {(index // group_size) % 2}", policy_id="p", run_id="r", renderer="numpy", init_config="[]"),
    )


def write_store(path: Path, episodes: int = 8, length: int = 20, image: int = 16, group_size: int = 4, offset: int = 0,
                order: list[int] | None = None, wait: int = 0) -> Path:
    """``order``: the order the episodes are committed in (parallel collectors commit as they finish)."""
    layout = StoreLayout(CAMERAS, (image, image, 3), 8, 7)
    with StoreWriter(path, layout) as writer:
        for i in order if order is not None else range(episodes):
            writer.append(make_episode(offset + i, length, image, success=(i % 2 == 0), group_size=group_size, wait=wait))
    return path


def label(stores: list[Path], **settings) -> Path:
    cfg = CFGRLConfig(**{"dropout_prob": 0.3, "label_scheme": "ternary", **settings})
    index = make_label_index([Store(p) for p in stores], cfg, REPLAN)
    return index.path


def run_train(run_dir: Path, stores: list[Path], labels: Path, *overrides: str, resume: bool = False) -> Path:
    """One in-process training run with test-sized defaults; returns RUN_DIR/policy."""
    from cfgrl.config import load_config
    from cfgrl.train.trainer import train

    from cfgrl.config import given_keys

    defaults = ["train.batch_size=8", "train.lr=3e-3", "train.warmup_steps=2", "train.log_every=5", "train.save_every=1000"]
    cfg = load_config(None, defaults + list(overrides))
    return train(cfg, stores, str(labels), run_dir, resume, given_keys(None, list(overrides)))


def initial_policy(stores: list[Path], seed: int = 0):
    """The fresh policy a run with ``train.seed=seed`` starts from."""
    import torch

    from cfgrl.config import load_config
    from cfgrl.train.setup import build_policy

    torch.manual_seed(seed)
    return build_policy(load_config(None, [f"train.seed={seed}"]), [Store(p) for p in stores], None, lambda _: None)


def fixed_draw_losses(policy, batch: dict, seed: int = 123) -> "torch.Tensor":
    """Per-sample losses under a fixed noise and time (comparable between two policies)."""
    import torch

    n = len(batch["state"])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, policy.config.chunk_size, policy.config.max_action_dim), generator=generator)
    time = torch.rand(n, generator=generator) * 0.9 + 0.05
    with torch.no_grad():
        return policy.compute_loss(batch, noise, time)


def all_windows_batch(cache, o) -> dict:
    """Every cached window as one policy batch with conditions ``o``."""
    import torch

    from cfgrl.train.data import WindowBatches, to_device

    raw = WindowBatches(cache)[list(range(len(cache)))]
    return to_device(raw, cache.prompts, o[raw["index"]], torch.device("cpu"))
