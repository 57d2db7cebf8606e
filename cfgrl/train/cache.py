"""A decompressed, memory-mapped copy of exactly what a label index's windows need.

Why: a single-frame random read from a Zarr array costs ~1.3 ms here (chunk decode), a read from a
memory-mapped ``.npy`` ~23 µs. Training visits every window once per epoch in random order, so the
stores are decoded once, sequentially, into plain ``.npy`` files (``np.load(mmap_mode="r")``; never
pickle), and the page cache does the rest. A store larger than memory still trains: nothing is held
in RAM beyond one block of frames while building, and the OS pages the maps in and out.

Layout of one cache directory (one row per window, in the index's row order)::

    meta.json              schema, key, num_windows, cameras, image_shape, horizon, prompts
    images_<camera>.npy    (N, H, W, 3) uint8   the obs0 frame of each window
    state.npy              (N, state_dim) float32   the state at obs0 (raw)
    actions.npy            (N, horizon, action_dim) float32   the action window (raw; zero past num_valid)
    num_valid.npy          (N,) int16   action_is_pad = arange(horizon) >= num_valid
    prompt.npy             (N,) int32   index into meta["prompts"]

The key hashes the stores' fingerprints and the window set (store, episode, start, num_valid, frame);
when either changes the directory is rebuilt (written to a temporary directory, then renamed).
Labels are not in the cache: they change with every label version and with --redraw-dropout.
A store whose needed frame chunks are missing or unreadable is refused, never cached as black frames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cfgrl.errors import CfgrlError
from cfgrl.schemas import TRAIN_CACHE
from cfgrl.store import Store

WINDOW_KEY_COLUMNS = ("store", "episode", "start", "num_valid", "frame")
FRAME_BLOCK = 256  # frames decoded per Zarr read while building (a multiple of the store's chunk of 16)


def cache_key(stores: list[Store], windows: pd.DataFrame, horizon: int) -> str:
    digest = hashlib.sha256(json.dumps({**TRAIN_CACHE.stamp(), "horizon": horizon}).encode())
    for store in stores:
        digest.update(store.fingerprint().encode())
    for column in WINDOW_KEY_COLUMNS:
        digest.update(np.ascontiguousarray(windows[column].to_numpy().astype(np.int64)).tobytes())
    return digest.hexdigest()[:20]


@dataclass
class WindowCache:
    """Read-only memory maps of one built cache."""

    path: Path
    meta: dict
    images: dict[str, np.ndarray]
    state: np.ndarray
    actions: np.ndarray
    num_valid: np.ndarray
    prompt: np.ndarray

    @classmethod
    def open(cls, path: str | Path) -> "WindowCache":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if not TRAIN_CACHE.matches(meta):
            raise CfgrlError(f"training cache '{path}' has another format; delete it and it is rebuilt")
        def load(name: str) -> np.ndarray:
            try:
                return np.load(path / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as exc:  # a file deleted or cut short after the build
                raise CfgrlError(f"training cache '{path}' is damaged ({name}.npy: {_first_line(exc)}); "
                                 "delete that directory and it is rebuilt") from None

        return cls(
            path=path,
            meta=meta,
            images={cam: load(f"images_{cam}") for cam in meta["cameras"]},
            state=load("state"),
            actions=load("actions"),
            num_valid=load("num_valid"),
            prompt=load("prompt"),
        )

    def __len__(self) -> int:
        return int(self.meta["num_windows"])

    @property
    def prompts(self) -> list[str]:
        return self.meta["prompts"]


def ensure_cache(root: str | Path, stores: list[Store], windows: pd.DataFrame, horizon: int) -> WindowCache:
    """Open the cache under ``root`` for these stores and windows, building it first if needed.

    ``root`` holds one cache at a time: a cache with another key is replaced (after the new one is
    complete, so an interrupted build never leaves a half-written cache in use)."""
    root = Path(root)
    key = cache_key(stores, windows, horizon)
    final = root / key
    if (final / "meta.json").is_file():
        return WindowCache.open(final)
    check_frames(root, stores, windows, horizon)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".building-{key}-{uuid.uuid4().hex[:8]}"
    try:
        _build(tmp, key, stores, windows, horizon)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not another process that built the same cache first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in root.iterdir():  # other keys: an older store content or window set
        if stale.name != key and not stale.name.startswith(".building-") and _is_cache(stale):
            shutil.rmtree(stale, ignore_errors=True)
    return WindowCache.open(final)


def check_frames(root: str | Path, stores: list[Store], windows: pd.DataFrame, horizon: int) -> None:
    """Refuse stores whose frame chunks the windows need are missing, unless their cache under ``root``
    is built already (then nothing more is read from them). Before anything is written or decoded:
    never black frames in their place, and a refused run leaves no output behind."""
    if (Path(root) / cache_key(stores, windows, horizon) / "meta.json").is_file():
        return
    for s, store in enumerate(stores):
        _check_frame_chunks(store, windows["frame"].to_numpy()[windows["store"].to_numpy() == s])


def _is_cache(path: Path) -> bool:
    """Only our own caches are ever replaced: train.cache_dir may point at a shared directory."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return TRAIN_CACHE.matches(meta)


def _build(out: Path, key: str, stores: list[Store], windows: pd.DataFrame, horizon: int) -> None:
    out.mkdir(parents=True)
    n = len(windows)
    layout = stores[0].layout
    h, w, c = layout.image_shape
    create = lambda name, shape, dtype: np.lib.format.open_memmap(out / f"{name}.npy", "w+", dtype, shape)  # noqa: E731
    images = {cam: create(f"images_{cam}", (n, h, w, c), np.uint8) for cam in layout.camera_names}
    state = create("state", (n, layout.state_dim), np.float32)
    actions = create("actions", (n, horizon, layout.action_dim), np.float32)
    num_valid = create("num_valid", (n,), np.int16)
    prompt_ids = create("prompt", (n,), np.int32)

    prompts: dict[str, int] = {}
    store_col = windows["store"].to_numpy()
    with tqdm(total=n, desc="caching windows", unit="win", leave=False) as bar:  # closed before a refusal's one line
        for s, store in enumerate(stores):
            rows = np.flatnonzero(store_col == s)
            if len(rows) == 0:
                continue
            sub = windows.iloc[rows]
            episodes = store.episodes
            episode = sub["episode"].to_numpy()
            step0 = episodes["step_start"].to_numpy()[episode] + sub["start"].to_numpy()
            valid = sub["num_valid"].to_numpy().astype(np.int64)
            _copy_steps(store, rows, step0, valid, horizon, state, actions)
            num_valid[rows] = valid
            for r, text in zip(rows, episodes["prompt"].to_numpy()[episode]):
                prompt_ids[r] = prompts.setdefault(str(text), len(prompts))
            _copy_frames(store, rows, sub["frame"].to_numpy(), images, bar)
    for array in (*images.values(), state, actions, num_valid, prompt_ids):
        array.flush()
    meta = {
        **TRAIN_CACHE.stamp(),
        "key": key,
        "num_windows": n,
        "cameras": list(layout.camera_names),
        "image_shape": [h, w, c],
        "horizon": horizon,
        "fingerprints": [store.fingerprint() for store in stores],
        "prompts": list(prompts),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def _copy_steps(store: Store, rows: np.ndarray, step0: np.ndarray, valid: np.ndarray, horizon: int,
                state: np.ndarray, actions: np.ndarray) -> None:
    """State at obs0 and the action window: global step row of action t = step_start + start + t."""
    n_steps = store.num_steps
    all_state, all_action = store.read_steps("state"), store.read_steps("action")
    state[rows] = all_state[step0]
    t = np.arange(horizon)
    step_rows = np.minimum(step0[:, None] + t[None, :], n_steps - 1)
    window = all_action[step_rows]
    window[t[None, :] >= valid[:, None]] = 0.0  # padded actions: masked out of the loss
    actions[rows] = window


def _check_frame_chunks(store: Store, frames: np.ndarray) -> None:
    """Refuse a store whose frame chunks the windows need are missing on disk.

    Zarr reads a missing chunk as its fill value, i.e. black frames, without a word. The store writer
    writes every frame chunk (``cfgrl.store``), so a missing one was lost: an incomplete copy, a
    deleted file. (Older stores skipped all-black chunks, which no working camera renders.)"""
    for cam in store.layout.camera_names:
        try:
            array = store.frames(cam)
        except KeyError:
            raise CfgrlError(f"store '{store.path}' has no frames/{cam} array; copy the store again or recollect it") from None
        chunks = np.unique(frames // array.chunks[0])
        folder = store.path / "frames" / cam
        missing = [c for c in chunks if not (folder / array.metadata.encode_chunk_key((int(c), 0, 0, 0))).is_file()]
        if missing:
            first = int(missing[0]) * array.chunks[0]
            raise CfgrlError(f"store '{store.path}': frames/{cam} lacks {len(missing)} of the {len(chunks)} chunks the windows "
                             f"need (the first holds frames {first}-{first + array.chunks[0] - 1}); training would see black "
                             "frames there: copy the store again or recollect it")


def _read_frames(store: Store, cam: str, array, lo: int, hi: int) -> np.ndarray:
    try:
        return np.asarray(array[lo:hi])
    except Exception as exc:  # whatever the codec raises on a damaged chunk
        raise CfgrlError(f"store '{store.path}': frames/{cam} rows {lo}-{hi - 1} cannot be read ({type(exc).__name__}: "
                         f"{_first_line(exc)}); the store is damaged: copy it again or recollect it") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


def _copy_frames(store: Store, rows: np.ndarray, frames: np.ndarray, images: dict[str, np.ndarray], bar: tqdm) -> None:
    """Decode the needed frames block by block, in frame order (sequential Zarr reads)."""
    order = np.argsort(frames, kind="stable")
    frames, rows = frames[order], rows[order]
    arrays = {cam: store.frames(cam) for cam in images}
    i = 0
    while i < len(frames):
        lo = int(frames[i])
        hi = lo + FRAME_BLOCK
        j = int(np.searchsorted(frames, hi, side="left"))
        for cam, arr in arrays.items():
            block = _read_frames(store, cam, arr, lo, min(hi, int(frames[j - 1]) + 1))
            images[cam][rows[i:j]] = block[frames[i:j] - lo]
        bar.update(j - i)
        i = j
