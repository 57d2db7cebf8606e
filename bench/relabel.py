"""Relabelling benchmark: (1) labelling speed on a large synthetic store (target >= 1e6 windows/s),
(2) relabel time on a store with images over the same episodes without images (target <= 1.10:
relabelling reads only the episode table, rewards and frame steps, never an image).

    .venv/bin/python bench/relabel.py                 # defaults: ~1.7M windows; 800 episodes with 2x64x64 images
    .venv/bin/python bench/relabel.py --episodes 20000 --image-episodes 50   # quicker
    .venv/bin/python bench/relabel.py --json data/bench/relabel.json       # also the figures as JSON

The ratio is printed last.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it
from tqdm import tqdm

from cfgrl.config import CFGRLConfig
from cfgrl.label import make_label_index
from cfgrl.label.build import label_windows, resolve_settings
from cfgrl.label.windows import StoreData
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter

REPLAN = 5
GROUP_SIZE = 8


def synthetic_store(path: Path, episodes: int, length: int, cameras: tuple[str, ...], image_size: int) -> Store:
    """RLOO groups of 8 with sparse 0/1 success rewards; zero states and actions; random images."""
    layout = StoreLayout(cameras, (image_size, image_size, 3), 8, 7)
    rng = np.random.default_rng(0)
    query = np.arange(0, length, REPLAN)
    with StoreWriter(path, layout, commit_seconds=1e9) as writer:
        for i in tqdm(range(episodes), desc=f"writing {path.name}", leave=False):
            n = int(length - rng.integers(0, length // 2)) if i % 3 else length  # some succeed early
            success = bool(rng.random() < 0.5)
            reward = np.zeros(n, np.float32)
            reward[-1] = float(success)
            steps = query[query < n]
            image_rng = np.random.default_rng(i)  # the same images whatever else was drawn
            writer.append(EpisodeData(
                state=np.zeros((n, 8), np.float32), action=np.zeros((n, 7), np.float32), reward=reward,
                done=reward > 0, is_wait=np.zeros(n, bool),
                frames={c: image_rng.integers(0, 256, (len(steps), image_size, image_size, 3), dtype=np.uint8) for c in cameras},
                frame_step=steps,
                meta=dict(num_wait_steps=0, task_id=i // GROUP_SIZE % 10, init_state_id=i // GROUP_SIZE,
                          group_id=i // GROUP_SIZE, rollout_index=i % GROUP_SIZE, seed=i, success=success,
                          cfg_scale=1.0, env="builtin", suite="reach", prompt="p", policy_id="p", run_id="bench",
                          renderer="numpy", init_config="[]"),
            ))
    return Store(path)


def time_label(store_path: Path, out: Path, source: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one relabel into a fresh directory."""
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    make_label_index([Store(store_path)], CFGRLConfig(label_source=source), REPLAN, out, None)  # fresh open: no cache
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50_000, help="episodes of the large store (no images)")
    parser.add_argument("--length", type=int, default=200, help="steps per episode (a window every 5)")
    parser.add_argument("--image-episodes", type=int, default=800, help="episodes of the image / no-image pair")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    work = Path(tempfile.mkdtemp(prefix="cfgrl-bench-relabel-"))
    try:
        big = synthetic_store(work / "big.zarr", args.episodes, args.length, (), 8)
        start = time.perf_counter()
        data = [StoreData.read(Store(big.path))]
        figures.add("large store: episodes", big.num_episodes, "episodes")
        figures.add("large store: steps", big.num_steps, "steps")
        read = figures.add("large store: reading the episode table, rewards and frame steps", time.perf_counter() - start, "s")
        print(f"large store: {big.num_episodes:,} episodes, {big.num_steps:,} steps; reading the episode table, "
              f"rewards and frame steps: {read:.2f} s")
        for source in ("episode_rloo", "window_rloo", "window_return"):
            settings = resolve_settings(CFGRLConfig(label_source=source), REPLAN)
            core = []
            for _ in range(3):
                start = time.perf_counter()
                table, _ = label_windows(data, settings)
                core.append(time.perf_counter() - start)
            whole = min(time_label(big.path, work / "big.labels", source)[0] for _ in range(2))
            figures.add(f"{source}: windows", len(table), "windows")
            figures.add(f"{source}: labelling", len(table) / min(core), "windows/s", target=">= 1e6")
            figures.add(f"{source}: end to end with reading, parquet, manifest and histogram", len(table) / whole, "windows/s")
            print(f"{source:>14}: {len(table):,} windows; labelling {len(table) / min(core):,.0f} windows/s "
                  f"({min(core):.2f} s, target >= 1e6/s); end to end with reading, parquet, manifest and histogram "
                  f"{len(table) / whole:,.0f} windows/s ({whole:.2f} s)")

        with_images = synthetic_store(work / "images.zarr", args.image_episodes, args.length, ("agentview", "wrist"), args.image_size)
        without = synthetic_store(work / "plain.zarr", args.image_episodes, args.length, (), args.image_size)
        assert with_images.fingerprint() == without.fingerprint()  # the same episodes
        gib = with_images.size_bytes() / 2**30
        runs = {"images": [], "plain": []}
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
            runs["images"].append(time_label(with_images.path, work / "i.labels", "episode_rloo"))
            runs["plain"].append(time_label(without.path, work / "p.labels", "episode_rloo"))
        wall = {k: [w for w, _ in v] for k, v in runs.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
        best = {k: min(v) for k, v in wall.items()}  # the least disturbed run: the machine may be shared
        med = {k: statistics.median(v) for k, v in wall.items()}
        print(f"relabel, store with images ({gib:.2f} GiB): best {best['images']:.3f} s, median {med['images']:.3f} s, "
              f"CPU {cpu['images']:.3f} s; same episodes without images ({without.size_bytes() / 2**20:.1f} MiB): best "
              f"{best['plain']:.3f} s, median {med['plain']:.3f} s, CPU {cpu['plain']:.3f} s ({args.repeats} interleaved runs each)")
        print(f"median wall ratio {med['images'] / med['plain']:.3f}; median CPU ratio {cpu['images'] / cpu['plain']:.3f}")
        print(f"relabel time ratio images / no images (best of {args.repeats}): {best['images'] / best['plain']:.3f} (target <= 1.10)")
        figures.add("store with images: size", gib, "GiB")
        figures.add("the same episodes without images: size", without.size_bytes() / 2**20, "MiB")
        for name, stat in (("best", best), ("median", med), ("CPU median", cpu)):  # each with images against the same without
            figures.add(f"relabel without images: {name}", stat["plain"], "s")
            figures.add(f"relabel with images: {name}", stat["images"], "s", vs=f"relabel without images: {name}")
        figures.add(f"relabel time ratio images / no images (best of {args.repeats})", best["images"] / best["plain"], "x",
                    target="<= 1.10", headline=True)
        figures.write(args.json, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
