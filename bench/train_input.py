"""Is the training input fast enough? One run measures, on one synthetic store:

  pipeline   windows/s the trainer's input delivers (memory-mapped cache -> batches of 32, loader
             workers, pinned and moved to the device)
  (a) model  samples/s one tiny-preset training step consumes at batch 32 (forward, backward, AdamW)
  (b) zarr   windows/s of a plain per-item reader of the same Zarr arrays (diffusion_policy style)
  wait       the data-wait share of a real tiny training run (cfgrl.train.trainer) on that store

Targets: pipeline >= 5x (a), pipeline >= 5x (b), wait < 5%. The ratio to (a) is printed last.

    .venv/bin/python bench/train_input.py                    # 224x224, 2 cameras, 24 episodes, no workers
    .venv/bin/python bench/train_input.py --workers 2        # also the same with loader workers
    .venv/bin/python bench/train_input.py --episodes 8 --image-size 64 --workers 0   # quick
    .venv/bin/python bench/train_input.py --json data/bench/train_input.json          # also the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import Figures, add_json_option  # bench/ is on the path of a script run from it

from cfgrl.config import CFGRLConfig, load_config
from cfgrl.label import make_label_index
from cfgrl.policy import PI0Config, PI0Policy
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter
from cfgrl.train.cache import ensure_cache
from cfgrl.train.data import ResumableBatchSampler, WindowBatches, make_loader, to_device
from cfgrl.train.objectives import flow_draws
from cfgrl.train.trainer import train

CAMERAS = ("agentview", "wrist")
REPLAN = 5
BATCH = 32


def write_store(path: Path, episodes: int, length: int, size: int) -> Store:
    """Blocky images with pixel noise (they compress about like camera frames), random states and actions."""
    layout = StoreLayout(CAMERAS, (size, size, 3), 8, 7)
    rng = np.random.default_rng(0)
    with StoreWriter(path, layout) as writer:
        for e in range(episodes):
            query = np.arange(0, length, REPLAN)
            coarse = rng.integers(0, 230, size=(len(query), size // 8, size // 8, 3), dtype=np.uint8)
            smooth = np.repeat(np.repeat(coarse, 8, 1), 8, 2)
            frames = {cam: smooth + rng.integers(0, 24, size=smooth.shape, dtype=np.uint8) for cam in CAMERAS}
            success = e % 2 == 0
            reward = np.zeros(length, np.float32)
            reward[-1] = float(success)
            writer.append(EpisodeData(
                state=np.cumsum(rng.normal(size=(length, 8)), 0).astype(np.float32),
                action=rng.uniform(-1, 1, size=(length, 7)).astype(np.float32), reward=reward,
                done=reward > 0, is_wait=np.zeros(length, bool), frames=frames, frame_step=query,
                meta=dict(num_wait_steps=0, task_id=e // 4, init_state_id=e // 4, group_id=e // 4, rollout_index=e % 4,
                          seed=e, success=success, cfg_scale=1.0, env="builtin", suite="bench",
                          prompt=f"task {e // 4}", policy_id="p", run_id="bench", renderer="numpy", init_config="[]")))
    return Store(path)


def pipeline_rate(cache, workers: int, device: torch.device, seconds: float) -> float:
    dataset = WindowBatches(cache)
    sampler = ResumableBatchSampler(len(cache), BATCH, 1, 0, seed=0)
    loader = make_loader(dataset, sampler, workers, device.type == "cuda")
    o = np.ones(len(cache), np.int64)
    n, epoch, start = 0, 0, None
    while start is None or time.perf_counter() - start < seconds:
        sampler.set_position(epoch, 0)
        for raw in loader:
            to_device(raw, cache.prompts, o[np.asarray(raw["index"])], device)
            if start is None:  # the first batch pays for worker start-up
                start = time.perf_counter()
                continue
            n += len(raw["index"])
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
    return n / (time.perf_counter() - start)


def zarr_item_rate(store: Store, windows, seconds: float) -> float:
    """One window at a time, straight from the Zarr arrays: 2 frames, 1 state row, 50 action rows."""
    frames = {cam: store.frames(cam) for cam in CAMERAS}
    state, action = store.steps("state"), store.steps("action")
    step_start = store.episodes.step_start.to_numpy()
    order = np.random.default_rng(0).permutation(len(windows))
    n, start = 0, time.perf_counter()
    for i in order:
        w = windows.iloc[i]
        first = int(step_start[w.episode] + w.start)
        _ = [frames[cam][int(w.frame)] for cam in CAMERAS]
        _ = state[first], action[first : first + int(w.num_valid)]
        n += 1
        if time.perf_counter() - start >= seconds:
            break
    return n / (time.perf_counter() - start)


def model_rate(size: int, device: torch.device, steps: int) -> float:
    cfg = PI0Config.from_preset("tiny", image_size=size, camera_names=CAMERAS)
    policy = PI0Policy(cfg).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    batch = {"images": {c: torch.randint(0, 255, (BATCH, size, size, 3), dtype=torch.uint8, device=device) for c in CAMERAS},
             "state": torch.randn(BATCH, 8, device=device), "prompt": ["task 0"] * BATCH,
             "actions": torch.randn(BATCH, 50, 7, device=device), "action_is_pad": torch.zeros(BATCH, 50, dtype=torch.bool, device=device),
             "o": torch.ones(BATCH, dtype=torch.long, device=device)}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        noise, t = flow_draws(np.arange(BATCH), step, 0, (50, 32), device)
        with autocast:
            loss = policy.compute_loss(batch, noise, t).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return BATCH / float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--length", type=int, default=120, help="steps per episode (a window every 5)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes of the pipeline (0 = read in the training process)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per reader")
    parser.add_argument("--train-steps", type=int, default=10, help="steps of the real training run (data-wait share)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    add_json_option(parser)
    args = parser.parse_args()
    figures = Figures(__file__, __doc__)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        started = time.perf_counter()
        store = write_store(root / "bench.zarr", args.episodes, args.length, args.image_size)
        index = make_label_index([store], CFGRLConfig(), REPLAN)
        windows = index.windows
        write_seconds = time.perf_counter() - started
        print(f"store: {args.episodes} episodes, {len(windows)} windows, {len(CAMERAS)} cameras at "
              f"{args.image_size}x{args.image_size}, {store.size_bytes() / 1e6:.0f} MB on disk ({write_seconds:.1f} s to write)")
        started = time.perf_counter()
        cache = ensure_cache(root / "cache", [store], windows, 50)
        cache_seconds = time.perf_counter() - started
        print(f"cache build: {len(windows) / cache_seconds:,.0f} windows/s (once per store content and window set)")

        pipe = pipeline_rate(cache, args.workers, device, args.seconds)
        pipe0 = pipeline_rate(cache, 0, device, args.seconds) if args.workers else pipe
        zarr = zarr_item_rate(store, windows, args.seconds)
        model = model_rate(args.image_size, device, steps=5)

        run = root / "run"
        overrides = [f"train.steps={args.train_steps}", f"train.batch_size={BATCH}", f"train.num_workers={args.workers}",
                     f"train.log_every={args.train_steps}", f"train.save_every={args.train_steps}", f"train.cache_dir={root / 'cache'}"]
        train(load_config(None, overrides), [store.path], str(index.path), run, resume=False)
        record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line][-1]

        print(f"device: {device}; loader workers: {args.workers}")
        print(f"pipeline: {pipe:,.0f} windows/s ({pipe0:,.0f} with 0 workers)")
        print(f"(b) per-item Zarr reader: {zarr:,.0f} windows/s  -> pipeline / (b) = {pipe / zarr:.1f}x "
              f"(0 workers: {pipe0 / zarr:.1f}x; target >= 5x)")
        print(f"real tiny training run: data-wait share {record['data_wait_share']:.2%} (target < 5%), "
              f"{record['samples_per_s']:.1f} samples/s")
        print(f"(a) tiny training step at batch {BATCH}: {model:,.1f} samples/s  -> pipeline / (a) = {pipe / model:.1f}x (target >= 5x)")
        figures.add("store: windows", len(windows), "windows")
        figures.add("store: size on disk", store.size_bytes() / 1e6, "MB")
        figures.add("store: time to write and label", write_seconds, "s")
        figures.add("cache build", len(windows) / cache_seconds, "windows/s")
        # the pipeline against what consumes its windows and against the reader it replaces, in this run
        figures.add("pipeline", pipe, "windows/s", vs=(f"(a) tiny training step at batch {BATCH}", "(b) per-item Zarr reader"), target=">= 5x each")
        figures.add("pipeline with 0 workers", pipe0, "windows/s", vs="(b) per-item Zarr reader")
        figures.add("(b) per-item Zarr reader", zarr, "windows/s")
        figures.add("real tiny training run: data-wait share", 100 * record["data_wait_share"], "%", target="< 5%")
        figures.add("real tiny training run", record["samples_per_s"], "samples/s")
        figures.add(f"(a) tiny training step at batch {BATCH}", model, "windows/s")  # its samples/s: a sample is a window
        figures.add("pipeline / (a)", pipe / model, "x", target=">= 5", headline=True)
        figures.write(args.json, args)
    sys.exit(0)


if __name__ == "__main__":
    main()
