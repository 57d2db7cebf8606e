"""The collected store the export tests and the export fixture share (tests/fixtures/make_lerobot_dataset.py
runs this file with the project's venv), and what the store holds per exported row.

    .venv/bin/python tests/lerobot_data/export_store.py DIR/export.zarr   # also writes DIR/export_reference.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cfgrl.cli import app

SETTINGS = ["-o", "env.image_size=32", "-o", "collect.group_size=2", "-o", "env.init_states=[100, 101]", "-o", "env.max_steps=30"]
CAMERAS = {"agentview": "observation.images.image", "wrist": "observation.images.wrist_image"}


def cfgrl(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise RuntimeError(f"cfgrl {' '.join(map(str, args))} failed: {result.output}")
    return result.output


def build(store: Path) -> str:
    """Collect four scripted episodes (deterministic: seeds from the group grid) and label them; returns the version."""
    cfgrl("collect", store, "--policy", "scripted:0.5", "--episodes", "4", "--workers", "1", *SETTINGS)
    out = cfgrl("label", store, "--name", "export", "-o", "cfgrl.zero_variance_groups=keep", "-o", "cfgrl.dropout_prob=0.5")
    return out.strip().splitlines()[-1].split()[2].rstrip(":")


def reference(store_path: Path) -> dict[str, np.ndarray]:
    """Per exported row, in export order: what the store holds (the frame: its last query step's)."""
    from cfgrl.lerobot_data.export import row_frames
    from cfgrl.store import Store

    store = Store(store_path)
    ep = store.episodes
    order = np.concatenate([np.arange(r.step_start, r.step_start + r.length) for r in ep.itertuples()])
    frames = row_frames(store)[order]
    out = {"observation.state": store.read_steps("state")[order], "action": store.read_steps("action")[order],
           "episode_index": np.repeat(np.arange(len(ep)), ep.length.to_numpy()),
           "frame_index": np.concatenate([np.arange(n) for n in ep.length.to_numpy()])}
    for camera, key in CAMERAS.items():
        out[key] = store.block(f"frames/{camera}", 0, store.num_frames)[frames]
    return out


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print(build(path))
    np.savez_compressed(path.parent / "export_reference.npz", **reference(path))
