"""`cfgrl import` throughput at 256 px against PyAV decoding alone, in the same run (target: >= 1,000 frames/s
with one decoding thread).

    .venv/bin/python bench/lerobot_import.py [--episodes 20 --length 100 --size 256] [--json OUT]

The dataset is LIBERO's shape: two 256² AV1 cameras (observation.images.image, observation.images.wrist_image),
8-d state, 7-d action, 10 fps, written by `cfgrl export-dataset` from a synthetic store of smooth moving
images (so it is lerobot's layout and lerobot's default encoder, libsvtav1, crf 30, GOP 2). Then:

- decode alone: every frame of both MP4s with PyAV, one thread, no conversion (what a reader that
  decodes every frame pays before doing anything with it)
- import: `import_dataset` into a store at LIBERO's 224 px with replan_steps 5: parquet, the packets
  from each kept frame's key frame up to it decoded (GOP 2: 3 of every 10), the kept frames converted
  and resized, the store's commits; one decoding thread

Frames/s here are dataset frames, i.e. rows (one control step, both cameras: what the issue's target
counts); rates per camera frame are twice these. Both figures are printed with the import's time as a
multiple of decoding alone's, measured in the same run (a shared machine's load moves both).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.config import load_config
from cfgrl.store import EpisodeData, StoreLayout, StoreWriter

PROMPTS = ["grasp the top left ball", "grasp the top right ball", "grasp the bottom left ball", "grasp the bottom right ball"]


def synthetic_store(path: Path, episodes: int, length: int, size: int) -> None:
    """Episodes with a frame at every step (so the export's every row is a distinct image), smooth and moving."""
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(0)
    with StoreWriter(path, StoreLayout(("agentview", "wrist"), (size, size, 3), 8, 7), commit_seconds=1e9) as writer:
        for e in range(episodes):
            frames = {}
            for c, camera in enumerate(("agentview", "wrist")):
                t = np.arange(length)[:, None, None]
                base = np.stack([(x + 3 * t + 40 * e) % 256, (y + 2 * t + 90 * c) % 256, ((x + y) // 2 + t) % 256], -1)
                frames[camera] = base.astype(np.uint8)
            reward = np.zeros(length, np.float32)
            reward[-1] = 1
            meta = dict(num_wait_steps=0, task_id=e % 4, init_state_id=e, group_id=e, rollout_index=0, seed=e, success=True,
                        cfg_scale=1.0, env="builtin", suite="reach", prompt=PROMPTS[e % 4], policy_id="p", run_id="r",
                        renderer="numpy", init_config="[]")
            writer.append(EpisodeData(rng.normal(size=(length, 8)).astype(np.float32), rng.uniform(-1, 1, (length, 7)).astype(np.float32),
                                      reward, reward > 0, np.zeros(length, bool), frames, np.arange(length), meta))


def decode_alone(dataset: Path) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    for video in sorted((dataset / "videos").rglob("*.mp4")):
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for _ in container.decode(stream):
                count += 1
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    from cfgrl.lerobot_data.export import export_dataset
    from cfgrl.lerobot_data.ingest import import_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-lerobot-"))
    try:
        synthetic_store(tmp / "source.zarr", args.episodes, args.length, args.size)
        export_dataset(tmp / "source.zarr", tmp / "dataset")
        rows = args.episodes * args.length
        frames, seconds = decode_alone(tmp / "dataset")
        cfg = load_config(None, ["env.image_size=224", "collect.commit_seconds=5"])
        start = time.perf_counter()
        import_dataset(cfg, tmp / "imported.zarr", tmp / "dataset", threads=1)
        imported = time.perf_counter() - start
        print(f"bench/lerobot_import.py --episodes {args.episodes} --length {args.length} --size {args.size}: "
              f"{rows} rows (dataset frames) x 2 cameras at {args.size} px, PyAV {av.__version__}")
        print(f"decode alone (1 thread): {rows / seconds:,.0f} rows/s ({frames / seconds:,.0f} camera frames/s)")
        print(f"cfgrl import (1 decoding thread, to 224 px, replan 5): {rows / imported:,.0f} rows/s "
              f"({imported / seconds:.2f}x decode alone's time); target >= 1,000 rows/s")
        write_figures(figures, args, rows, frames, seconds, imported)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_figures(figures: Figures, args: argparse.Namespace, rows: int, frames: int, decode_s: float, import_s: float) -> None:
    """The printed figures, for --json; the import's time against decoding alone's, measured in this run."""
    figures.machine["pyav"] = av.__version__
    figures.add("rows (dataset frames, 2 cameras each)", rows, "rows")
    figures.add("decode alone (1 thread)", rows / decode_s, "rows/s")
    figures.add("decode alone (1 thread), camera frames", frames / decode_s, "camera frames/s")
    figures.add("cfgrl import (1 decoding thread, to 224 px, replan 5)", rows / import_s, "rows/s", target=">= 1,000", headline=True)
    figures.add("decode alone: time", decode_s, "s")
    figures.add("cfgrl import: time", import_s, "s", vs="decode alone: time")
    figures.write(args.json, args)


if __name__ == "__main__":
    main()
