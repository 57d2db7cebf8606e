"""`cfgrl value`: stores -> two cross-fitted value models -> V for every stored frame.

Cross-fitting: each store's episodes are split in two folds (per task, alternately after a seeded
shuffle, so both folds see every task with two episodes or more); the model trained on fold 0 values
the frames of fold 1 and the reverse. A model fit on the episodes it values would have seen their
outcome, and their advantages A = r + V' - V would shrink towards 0.

Every frame is loaded once (images resized to ``value.image_size``, kept uint8), so training reads
no store during its steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cfgrl import atomic
from cfgrl.config import Config
from cfgrl.envs import max_policy_steps
from cfgrl.errors import CfgrlError
from cfgrl.schemas import VALUE
from cfgrl.store import Store, episode_frames
from cfgrl.value.model import ValueNet, expected_value, hl_gauss_loss
from cfgrl.value.output import COLUMNS, MANIFEST, VALUES, ValueOutput, store_env, value_id
from cfgrl.value.targets import Returns

READ_BLOCK = 256  # frames read and resized at a time: bounds memory with 224-pixel LIBERO images
EVAL_BATCH = 512


@dataclass
class Frames:
    """Every stored frame of the stores, with what the model reads and the key of its episode."""

    images: torch.Tensor  # uint8 (M, 3 * cameras, S, S)
    state: torch.Tensor  # float32 (M, D)
    task: torch.Tensor  # int64 (M,) index into the task list
    elapsed: torch.Tensor  # float32 (M,) policy steps done / L
    target: np.ndarray  # (M,) y_t
    store: np.ndarray  # (M,)
    frame: np.ndarray  # (M,) row in the store's frames/*
    episode: np.ndarray  # (M,) row in the store's episode table
    step: np.ndarray  # (M,)
    fold: np.ndarray  # (M,) fold of the frame's episode


def _check_stores(stores: list[Store]) -> tuple[str, list[str]]:
    envs = [store_env(s) for s in stores]
    first = stores[0]
    for store, env in zip(stores, envs):
        if env != envs[0] or store.layout != first.layout:
            raise CfgrlError(f"stores '{first.path}' ({envs[0]}, {first.layout}) and '{store.path}' ({env}, {store.layout}) "
                             "differ in env, cameras or dimensions; one value model reads one kind of observation")
        if store.num_episodes < 2:
            raise CfgrlError(f"store '{store.path}' holds {store.num_episodes} episode; cross-fitting splits each store's "
                             "episodes in two folds, so it needs at least 2")
    fingerprints = [s.fingerprint() for s in stores]
    if len(set(fingerprints)) < len(fingerprints):
        raise CfgrlError("the same store is given twice (equal fingerprints: one store by two paths, or a copy); pass it once")
    return envs[0], fingerprints


def split_folds(task: np.ndarray, seed: int) -> np.ndarray:
    """Fold 0 or 1 per episode of one store: a seeded shuffle, grouped by task, then alternating, so
    the folds differ by one episode at most, overall and within each task."""
    order = np.random.default_rng(seed).permutation(len(task))
    order = order[np.argsort(task[order], kind="stable")]
    fold = np.empty(len(task), np.int8)
    fold[order] = np.arange(len(task)) % 2
    return fold


def _resize(block: np.ndarray, size: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, size, size) uint8, area-averaged (never enlarged)."""
    x = torch.from_numpy(block).permute(0, 3, 1, 2)
    if x.shape[-1] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


def _read_images(store: Store, rows: np.ndarray, size: int) -> torch.Tensor:
    out = []
    for a in tqdm(range(0, len(rows), READ_BLOCK), desc=f"frames of {store.path.name}", unit="block", dynamic_ncols=True):
        block = rows[a:a + READ_BLOCK]
        lo, hi = int(block.min()), int(block.max()) + 1
        cams = [_resize(store.block(f"frames/{c}", lo, hi)[block - lo], size) for c in store.layout.camera_names]
        out.append(torch.cat(cams, dim=1))
    return torch.cat(out)


def load_frames(stores: list[Store], cfg: Config, tasks: list[tuple[str, int]], max_length: dict[str, int]) -> Frames:
    parts: dict[str, list[Any]] = {}
    task_index = {task: i for i, task in enumerate(tasks)}
    size = min(cfg.value.image_size, stores[0].layout.image_shape[0])
    for index, store in enumerate(stores):
        ep = store.episodes
        returns = Returns.of(str(store.path), ep, store.read_steps("reward"), max_length, cfg.value.failure_penalty)
        episode, frame = episode_frames(ep["frame_start"].to_numpy(), ep["frame_count"].to_numpy())
        step = store.frame_steps()[frame].astype(np.int64)
        state_row = ep["step_start"].to_numpy(np.int64)[episode] + np.minimum(step, ep["length"].to_numpy(np.int64)[episode] - 1)
        episode_task = np.array([task_index[(str(a), int(b))] for a, b in zip(ep["suite"], ep["task_id"])], np.int64)
        policy_steps = np.maximum(step - ep["num_wait_steps"].to_numpy(np.int64)[episode], 0)
        fold = split_folds(ep["task_id"].to_numpy(), cfg.value.seed + index)
        for name, value in {
            "images": _read_images(store, frame, size),
            "state": torch.from_numpy(store.read_steps("state")[state_row].astype(np.float32)),
            "task": torch.from_numpy(episode_task[episode]),
            "elapsed": torch.from_numpy((policy_steps / returns.max_length[episode]).astype(np.float32)),
            "target": returns.target(episode, step), "store": np.full(len(frame), index), "frame": frame,
            "episode": episode, "step": step, "fold": fold[episode],
        }.items():
            parts.setdefault(name, []).append(value)
    return Frames(**{k: torch.cat(v) if isinstance(v[0], torch.Tensor) else np.concatenate(v) for k, v in parts.items()})


def _batch(frames: Frames, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    idx = torch.from_numpy(rows)
    return tuple(t[idx].to(device) for t in (frames.images, frames.state, frames.task, frames.elapsed))


def train_fold(frames: Frames, rows: np.ndarray, cfg: Config, fold: int, device: torch.device, bar: tqdm,
               log: Callable[[dict[str, Any]], None]) -> ValueNet:
    """A value model fit on the frames ``rows`` (the episodes of one fold)."""
    v = cfg.value
    torch.manual_seed(v.seed * 2 + fold)
    model = ValueNet(frames.images.shape[1] // 3, frames.images.shape[-1], frames.state.shape[1], int(frames.task.max()) + 1)
    state = frames.state[torch.from_numpy(rows)]
    model.state_mean.copy_(state.mean(0))
    model.state_std.copy_(state.std(0, unbiased=False).clamp_min(1e-3))  # a constant state dimension stays finite
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=v.lr)
    rng = np.random.default_rng(v.seed * 2 + fold)
    target = torch.from_numpy(frames.target.astype(np.float32))
    every = max(1, v.steps // 100)
    for step in range(1, v.steps + 1):
        batch = rows[rng.integers(0, len(rows), v.batch_size)]
        loss = hl_gauss_loss(model(*_batch(frames, batch, device)), target[torch.from_numpy(batch)].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(1)
        if step % every == 0 or step == v.steps:
            bar.set_postfix_str(f"fold {fold} loss {loss.item():.3f}", refresh=False)
            log({"fold": fold, "step": step, "loss": loss.item()})
    return model.eval()


@torch.no_grad()
def predict(model: ValueNet, frames: Frames, rows: np.ndarray, device: torch.device) -> tuple[np.ndarray, float]:
    """(V of the frames ``rows``, their mean HL-Gauss loss)."""
    values, loss = [], 0.0
    target = torch.from_numpy(frames.target.astype(np.float32))
    for a in range(0, len(rows), EVAL_BATCH):
        block = rows[a:a + EVAL_BATCH]
        logits = model(*_batch(frames, block, device))
        values.append(expected_value(logits).cpu().numpy())
        loss += hl_gauss_loss(logits, target[torch.from_numpy(block)].to(device)).item() * len(block)
    return np.concatenate(values), loss / len(rows)


def calibration(value: np.ndarray, target: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted V against mean empirical return in bins of equal frame count (by predicted V)."""
    order = np.argsort(value, kind="stable")
    return [{"predicted": float(value[b].mean()), "empirical": float(target[b].mean()), "frames": int(len(b))}
            for b in np.array_split(order, min(bins, len(order))) if len(b)]


def write_calibration_plot(value: np.ndarray, target: np.ndarray, table: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.9)
    ax.scatter(value, target, s=4, alpha=0.25, color="grey", label="frames")
    ax.plot([r["predicted"] for r in table], [r["empirical"] for r in table], "o-", color="crimson", label="binned mean")
    ax.plot([-1, 0], [-1, 0], "k--", linewidth=1, label="ideal")
    ax.set_xlim(-1.02, 0.02)
    ax.set_ylim(-1.02, 0.02)
    ax.set_xlabel("predicted V (held-out fold)")
    ax.set_ylabel("empirical normalised return")
    ax.legend(loc="upper left")
    ax.set_title(f"calibration, MAE {np.abs(value - target).mean():.3f}")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _check_out(out: Path) -> None:
    if out.exists():
        raise CfgrlError(f"--out '{out}' already exists; a value model's output is never overwritten: give a new directory")


def fit_values(stores: list[Store], cfg: Config, out: Path) -> ValueOutput:
    """Train the two cross-fitted models on ``stores`` and write V for every frame into ``out``."""
    out = Path(out).absolute()
    _check_out(out)
    env, fingerprints = _check_stores(stores)
    suites = sorted({str(s) for store in stores for s in store.episodes["suite"].unique()})
    max_length = {suite: max_policy_steps(cfg.env, env, suite) for suite in suites}
    tasks = sorted({(str(a), int(b)) for store in stores for a, b in zip(store.episodes["suite"], store.episodes["task_id"])})
    frames = load_frames(stores, cfg, tasks, max_length)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    value = np.full(len(frames.target), np.nan)
    log_lines: list[str] = []
    metrics: dict[str, Any] = {}
    states: list[dict[str, torch.Tensor]] = []
    with tqdm(total=2 * cfg.value.steps, unit="step", desc="value", dynamic_ncols=True) as bar:
        for fold in (0, 1):
            model = train_fold(frames, np.flatnonzero(frames.fold == fold), cfg, fold, device, bar,
                               lambda rec: log_lines.append(json.dumps(rec)))
            held_out = np.flatnonzero(frames.fold != fold)
            value[held_out], loss = predict(model, frames, held_out, device)
            mae = float(np.abs(value[held_out] - frames.target[held_out]).mean())
            metrics[f"fold{fold}"] = {"held_out_frames": len(held_out), "held_out_loss": loss, "held_out_mae": mae}
            log_lines.append(json.dumps({"fold": fold, "held_out_loss": loss, "held_out_mae": mae}))
            states.append({k: t.detach().cpu().contiguous() for k, t in model.state_dict().items()})
    table = pd.DataFrame({"store": frames.store, "frame": frames.frame, "episode": frames.episode, "step": frames.step,
                          "fold": frames.fold, "target": frames.target, "value": value}).astype(COLUMNS)
    metrics["held_out_mae"] = float(np.abs(value - frames.target).mean())
    metrics["calibration"] = calibration(value, frames.target)
    settings = {**dataclasses.asdict(cfg.value), "image_size": int(frames.images.shape[-1])}
    manifest = {
        **VALUE.stamp(),
        "id": value_id(settings, fingerprints, table),
        "settings": settings,
        "env": env,
        "camera_names": list(stores[0].layout.camera_names),
        "state_dim": stores[0].layout.state_dim,
        "tasks": [list(t) for t in tasks],
        "max_length": max_length,
        "model": {"bins": 201, "support": [-1.0, 0.0], "loss": "hl_gauss", "backbone": "cnn+state+task+elapsed"},
        "stores": [{"path": str(s.path.absolute()), "fingerprint": f, "episodes": s.num_episodes, "frames": s.num_frames}
                   for s, f in zip(stores, fingerprints)],
        "metrics": metrics,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write(out, manifest, table, log_lines, states)
    return ValueOutput(out, manifest, table)  # what was just written, not read back


def _write(out: Path, manifest: dict[str, Any], table: pd.DataFrame, log_lines: list[str], states: list[dict]) -> None:
    """Every file under a hidden sibling, then one rename: ``out`` is absent or whole."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temporary(out)
    shutil.rmtree(tmp, ignore_errors=True)  # a dead process's leftover with our pid
    tmp.mkdir()
    try:
        table.to_parquet(tmp / VALUES, index=False)
        (tmp / "train_log.jsonl").write_text("\n".join(log_lines) + "\n")
        for fold, state in enumerate(states):
            save_file(state, str(tmp / f"model_fold{fold}.safetensors"))
        write_calibration_plot(table["value"].to_numpy(), table["target"].to_numpy(), manifest["metrics"]["calibration"], tmp / "calibration.png")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _check_out(out)  # another run may have written it meanwhile
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary_text(output: ValueOutput) -> str:
    m = output.manifest
    lines = [f"value model {output.id}: {len(output.table)} frames of {sum(s['episodes'] for s in m['stores'])} episodes "
             f"in {len(m['stores'])} store(s), env {m['env']}, L {m['max_length']}"]
    for fold in (0, 1):
        f = m["metrics"][f"fold{fold}"]
        lines.append(f"  model of fold {fold}: held-out {f['held_out_frames']} frames, loss {f['held_out_loss']:.4f}, "
                     f"MAE {f['held_out_mae']:.4f}")
    lines.append(f"  held-out MAE overall {m['metrics']['held_out_mae']:.4f}; calibration plot {output.path / 'calibration.png'}")
    return "\n".join(lines)
