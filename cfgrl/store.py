"""The rollout store: a Zarr v3 group of flat per-step arrays plus an episode table.

Layout (diffusion_policy's ReplayBuffer idea: flat arrays along time, episodes as offsets)::

    store.zarr/                      root attributes: schema, schema_version, num_episodes, cameras, ...
      steps/state   (N, 8)  float32  the state observed before the step's action
      steps/action  (N, 7)  float32  the action executed at the step
      steps/reward  (N,)    float32  reward of that action
      steps/done    (N,)    bool     success reached by that action (the episode's last step)
      steps/is_wait (N,)    bool     LIBERO's settle steps with the "do nothing" action
      frames/<cam>  (M, H, W, 3) uint8  the images the policy saw, at its query steps only
      frames/step   (M,)    int32    step index (within its episode) of each frame
      episodes/<column> (E,)         one row per episode, see EPISODE_COLUMNS

Episode ``e`` owns steps ``[step_start[e], step_start[e] + length[e])`` and frames
``[frame_start[e], frame_start[e] + frame_count[e])``.

Commit protocol (one writer per store; zarr has no locks): a flush appends every array, then
rewrites the root attribute ``num_episodes`` (an atomic file replace). Readers trust only the first
``num_episodes`` rows, so after a crash at any moment the store opens with exactly the committed
episodes; the next writer truncates the uncommitted tails before appending.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from cfgrl.errors import CfgrlError
from cfgrl.schemas import STORE

STEP_ARRAYS = {"state": "float32", "action": "float32", "reward": "float32", "done": "bool", "is_wait": "bool"}
EPISODE_COLUMNS = {
    "step_start": "int64",
    "length": "int64",
    "frame_start": "int64",
    "frame_count": "int64",
    "num_wait_steps": "int32",
    "task_id": "int32",
    "init_state_id": "int32",
    "group_id": "int64",
    "rollout_index": "int32",
    "seed": "int64",
    "success": "bool",
    "cfg_scale": "float32",
    "env": "str",
    "suite": "str",
    "prompt": "str",
    "policy_id": "str",
    "run_id": "str",
    "renderer": "str",
}
OFFSET_COLUMNS = ("step_start", "length", "frame_start", "frame_count")
STEP_CHUNK = 65536  # relabelling reads whole reward columns: big chunks keep that fast
FRAME_CHUNK = 16
EPISODE_CHUNK = 4096


@dataclass(frozen=True)
class StoreLayout:
    """What must agree between every episode of one store."""

    camera_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, 3)
    state_dim: int
    action_dim: int

    def to_attrs(self) -> dict[str, Any]:
        return {
            "camera_names": list(self.camera_names),
            "image_shape": list(self.image_shape),
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "StoreLayout":
        return cls(tuple(attrs["camera_names"]), tuple(attrs["image_shape"]), attrs["state_dim"], attrs["action_dim"])


@dataclass
class EpisodeData:
    """One finished episode as the collector hands it to the writer.

    ``meta`` holds every non-offset episode column (task_id, prompt, seed, success, ...).
    """

    state: np.ndarray  # (T, state_dim)
    action: np.ndarray  # (T, action_dim)
    reward: np.ndarray  # (T,)
    done: np.ndarray  # (T,)
    is_wait: np.ndarray  # (T,)
    frames: dict[str, np.ndarray]  # camera -> (F, H, W, 3) uint8
    frame_step: np.ndarray  # (F,) step index of each frame within the episode
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(len(self.action))


def _require(path: Path) -> None:
    if not path.exists():
        raise CfgrlError(f"store '{path}' does not exist (create it with `cfgrl collect {path}`)")
    if not (path / "zarr.json").is_file():
        raise CfgrlError(f"'{path}' is not a Zarr store (no zarr.json); give a directory written by `cfgrl collect`")


class Store:
    """Read-only view of the committed episodes of one store. Arrays are opened lazily, so code
    that reads only rewards and dones never touches the image chunks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _require(self.path)
        self._root = zarr.open_group(str(self.path), mode="r")
        attrs = dict(self._root.attrs)
        STORE.check(attrs, f"store '{self.path}'")
        self.attrs = attrs
        self.layout = StoreLayout.from_attrs(attrs)
        self.num_episodes = int(attrs["num_episodes"])
        self._episodes: pd.DataFrame | None = None

    @property
    def episodes(self) -> pd.DataFrame:
        """The committed episode table (one row per episode, index = episode id)."""
        if self._episodes is None:
            n = self.num_episodes
            self._episodes = pd.DataFrame(
                {name: np.asarray(self._root[f"episodes/{name}"][:n]) for name in EPISODE_COLUMNS}
            )
        return self._episodes

    @property
    def num_steps(self) -> int:
        ep = self.episodes
        return int((ep.step_start + ep.length).max()) if len(ep) else 0

    @property
    def num_frames(self) -> int:
        ep = self.episodes
        return int((ep.frame_start + ep.frame_count).max()) if len(ep) else 0

    def steps(self, name: str) -> zarr.Array:
        """A per-step array (rows past ``num_steps`` are uncommitted: slice within it)."""
        if name not in STEP_ARRAYS:
            raise KeyError(f"unknown step array '{name}'; known: {', '.join(STEP_ARRAYS)}")
        return self._root[f"steps/{name}"]

    def frames(self, camera: str) -> zarr.Array:
        if camera not in self.layout.camera_names:
            raise KeyError(f"unknown camera '{camera}'; this store has {', '.join(self.layout.camera_names)}")
        return self._root[f"frames/{camera}"]

    def frame_steps(self) -> np.ndarray:
        return np.asarray(self._root["frames/step"][: self.num_frames])

    def episode_steps(self, episode: int, name: str) -> np.ndarray:
        row = self.episodes.iloc[episode]
        return np.asarray(self.steps(name)[row.step_start : row.step_start + row.length])

    def fingerprint(self) -> str:
        """Identity of the committed content: run ids, episode ids and lengths, outcomes."""
        ep = self.episodes
        digest = hashlib.sha256()
        for column in ("run_id", "group_id", "rollout_index", "seed", "length", "success"):
            digest.update(column.encode())
            digest.update(np.ascontiguousarray(ep[column].to_numpy().astype(str)).astype("U").tobytes())
        return digest.hexdigest()[:16]

    def read_steps(self, name: str) -> np.ndarray:
        """The committed rows of a per-step array, or one line naming it when a chunk cannot be decoded."""
        array = self.steps(name)
        try:
            return np.asarray(array[: self.num_steps])
        except Exception as exc:  # whatever the codec raises on a damaged chunk (Zstd: RuntimeError)
            raise CfgrlError(f"store '{self.path}': steps/{name} cannot be read ({type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0]}); the store is damaged: restore it from a copy, "
                             "or delete it and collect it again") from None

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def open_stores(paths: list[str | Path]) -> list[Store]:
    """Open several stores (every later stage accepts more than one)."""
    if not paths:
        raise CfgrlError("no store given; pass at least one store directory")
    stores = [Store(p) for p in paths]
    for store in stores:
        if store.num_episodes == 0:
            raise CfgrlError(f"store '{store.path}' has no finished episode yet")
    return stores


class StoreWriter:
    """Appends whole episodes to one store, committing them in small batches.

    ``flush_every`` episodes (or ``flush_seconds``) are buffered and then committed together: each
    zarr append rewrites a chunk and a metadata file, so batching keeps writing cheap while memory
    stays bounded. An uncommitted buffer is simply lost on a crash and recollected on resume.
    """

    def __init__(self, path: str | Path, layout: StoreLayout, flush_every: int = 8, flush_seconds: float = 5.0):
        self.path = Path(path)
        self.layout = layout
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._buffer: list[EpisodeData] = []
        self._last_flush = time.monotonic()
        if self.path.exists():
            self._root = self._open_existing()
        else:
            self._root = self._create()

    # -- opening -------------------------------------------------------------------------------
    def _create(self) -> zarr.Group:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(self.path), mode="w-")
        h, w, c = self.layout.image_shape
        dims = {"state": (self.layout.state_dim,), "action": (self.layout.action_dim,)}
        for name, dtype in STEP_ARRAYS.items():
            extra = dims.get(name, ())
            root.create_array(f"steps/{name}", shape=(0, *extra), chunks=(STEP_CHUNK, *extra), dtype=dtype)
        for cam in self.layout.camera_names:
            root.create_array(f"frames/{cam}", shape=(0, h, w, c), chunks=(FRAME_CHUNK, h, w, c), dtype="uint8")
        root.create_array("frames/step", shape=(0,), chunks=(STEP_CHUNK,), dtype="int32")
        for name, dtype in EPISODE_COLUMNS.items():
            root.create_array(f"episodes/{name}", shape=(0,), chunks=(EPISODE_CHUNK,), dtype=str if dtype == "str" else dtype)
        # Attributes last: a directory without them is not yet a store.
        root.attrs.update({**STORE.stamp(), **self.layout.to_attrs(), "num_episodes": 0, "created": time.time()})
        return root

    def _open_existing(self) -> zarr.Group:
        store = Store(self.path)  # validates schema version
        if store.layout != self.layout:
            raise CfgrlError(
                f"store '{self.path}' holds {store.layout} but this run produces {self.layout}; "
                "write to a new store"
            )
        root = zarr.open_group(str(self.path), mode="r+")
        self._truncate_uncommitted(root, store)
        return root

    @staticmethod
    def _truncate_uncommitted(root: zarr.Group, store: Store) -> None:
        """Drop rows a crashed writer appended after the last commit."""
        n_steps, n_frames, n_episodes = store.num_steps, store.num_frames, store.num_episodes
        for name in STEP_ARRAYS:
            arr = root[f"steps/{name}"]
            if arr.shape[0] != n_steps:
                arr.resize((n_steps, *arr.shape[1:]))
        for name in (*store.layout.camera_names, "step"):
            arr = root[f"frames/{name}"]
            if arr.shape[0] != n_frames:
                arr.resize((n_frames, *arr.shape[1:]))
        for name in EPISODE_COLUMNS:
            arr = root[f"episodes/{name}"]
            if arr.shape[0] != n_episodes:
                arr.resize((n_episodes,))

    # -- writing -------------------------------------------------------------------------------
    @property
    def num_committed(self) -> int:
        return int(self._root.attrs["num_episodes"])

    def append(self, episode: EpisodeData) -> None:
        self._validate(episode)
        self._buffer.append(episode)
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _validate(self, ep: EpisodeData) -> None:
        missing = set(EPISODE_COLUMNS) - set(OFFSET_COLUMNS) - set(ep.meta)
        if missing:
            raise ValueError(f"episode metadata lacks {sorted(missing)}")
        if set(ep.frames) != set(self.layout.camera_names):
            raise ValueError(f"episode cameras {sorted(ep.frames)} != store cameras {list(self.layout.camera_names)}")
        for cam, frames in ep.frames.items():
            if frames.shape[1:] != self.layout.image_shape or frames.dtype != np.uint8:
                raise ValueError(f"camera {cam}: frames {frames.shape} {frames.dtype}, expected (F, {self.layout.image_shape}) uint8")

    def flush(self) -> None:
        """Append the buffered episodes to every array, then commit them by bumping num_episodes."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        root = self._root
        step_base = root["steps/action"].shape[0]
        frame_base = root["frames/step"].shape[0]
        lengths = np.array([ep.length for ep in batch], dtype=np.int64)
        frame_counts = np.array([len(ep.frame_step) for ep in batch], dtype=np.int64)
        offsets = {
            "step_start": step_base + np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "length": lengths,
            "frame_start": frame_base + np.concatenate([[0], np.cumsum(frame_counts)[:-1]]),
            "frame_count": frame_counts,
        }
        for name, dtype in STEP_ARRAYS.items():
            root[f"steps/{name}"].append(np.concatenate([getattr(ep, name) for ep in batch]).astype(dtype))
        # Every frame chunk is written, even an all-black one (zarr skips chunks equal to the fill
        # value by default): a missing chunk then always means lost frames, which training refuses.
        with zarr.config.set({"array.write_empty_chunks": True}):
            frame_arrays = [root[f"frames/{cam}"] for cam in self.layout.camera_names]
        for cam, array in zip(self.layout.camera_names, frame_arrays):
            array.append(np.concatenate([ep.frames[cam] for ep in batch]))
        root["frames/step"].append(np.concatenate([ep.frame_step for ep in batch]).astype(np.int32))
        for name, dtype in EPISODE_COLUMNS.items():
            values = offsets[name] if name in offsets else [ep.meta[name] for ep in batch]
            root[f"episodes/{name}"].append(np.asarray(values, dtype=str if dtype == "str" else dtype))
        root.attrs["num_episodes"] = self.num_committed + len(batch)  # the commit

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

