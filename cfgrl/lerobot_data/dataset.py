"""Reading a local LeRobotDataset v3.0: its metadata, its episodes and their rows, checked up front.

Layout (lerobot 0.6.1)::

    meta/info.json                        codebase_version "v3.0", fps, features, path templates
    meta/tasks.parquet                    index: the task string; column task_index
    meta/episodes/chunk-*/file-*.parquet  one row per episode: length, tasks, data file, per video
                                          camera its file and [from_timestamp, to_timestamp)
    data/chunk-*/file-*.parquet           one row per frame, many episodes per file
    videos/<camera>/chunk-*/file-*.mp4    many episodes per file, addressed by timestamps

Everything is read with pyarrow and json; nothing is unpickled. Each failure is one line naming the
file and what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cfgrl.config import key_value_pairs
from cfgrl.errors import CfgrlError

VERSION = "v3.0"
CONVERTER = "python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=REPO_ID --root=DIR"
STATE, ACTION = "observation.state", "action"
# lerobot's LIBERO conversion names its cameras so; they are the LIBERO env's agentview and wrist
DEFAULT_CAMERA_MAP = {"observation.images.image": "agentview", "observation.images.wrist_image": "wrist"}


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file of the dataset, or one line naming it."""
    try:
        return pq.read_table(path, columns=columns).to_pandas()
    except FileNotFoundError:
        raise CfgrlError(f"dataset file '{path}' is missing; the dataset is incomplete (copy it again, whole)") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise CfgrlError(f"dataset file '{path}' is not a readable parquet file ({type(exc).__name__}: {first}); "
                         "the dataset is damaged: copy it again") from None


@dataclass(frozen=True)
class Dataset:
    """The metadata of one local v3.0 dataset."""

    root: Path
    info: dict[str, Any]
    info_sha256: str
    tasks: dict[int, str]  # task_index -> task string
    episodes: pd.DataFrame  # meta/episodes rows, sorted by episode_index

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, Any]:
        return self.info["features"]

    @classmethod
    def open(cls, root: Path) -> "Dataset":
        info_path = root / "meta" / "info.json"
        if not root.is_dir():
            raise CfgrlError(f"dataset '{root}' does not exist; give a local LeRobotDataset directory (with meta/info.json)")
        if not info_path.is_file():
            raise CfgrlError(f"'{root}' is not a LeRobotDataset (no meta/info.json)")
        raw = info_path.read_bytes()
        try:
            info = json.loads(raw)
        except ValueError as exc:
            raise CfgrlError(f"'{info_path}' is not valid JSON ({exc}); the dataset is damaged: copy it again") from None
        check_version(info, root)
        tasks = read_parquet(root / "meta" / "tasks.parquet")
        if "task_index" not in tasks.columns:
            raise CfgrlError(f"'{root / 'meta' / 'tasks.parquet'}' has no task_index column; not a v3.0 tasks table")
        task_names = tasks["task"] if "task" in tasks.columns else pd.Series(tasks.index, index=tasks.index)
        files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise CfgrlError(f"'{root}' has no meta/episodes/chunk-*/file-*.parquet; the dataset is incomplete or was never finalized")
        episodes = pd.concat([read_parquet(f) for f in files], ignore_index=True).sort_values("episode_index", ignore_index=True)
        return cls(root, info, hashlib.sha256(raw).hexdigest(), dict(zip(tasks.task_index.astype(int), task_names.astype(str))), episodes)

    def camera_keys(self) -> list[str]:
        return [key for key, f in self.features.items() if f.get("dtype") in ("video", "image")]

    def data_file(self, episode: pd.Series) -> Path:
        return self.root / self.info["data_path"].format(chunk_index=int(episode["data/chunk_index"]),
                                                          file_index=int(episode["data/file_index"]))

    def video_file(self, episode: pd.Series, key: str) -> Path:
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=int(episode[f"videos/{key}/chunk_index"]),
                                                           file_index=int(episode[f"videos/{key}/file_index"]))

    def is_video(self, key: str) -> bool:
        return self.features[key]["dtype"] == "video"


def check_version(info: dict[str, Any], root: Path) -> None:
    version = str(info.get("codebase_version", "none"))
    if version != VERSION:
        upgrade = f"; upgrade it with lerobot's converter: {CONVERTER}" if version.startswith("v2") else ""
        raise CfgrlError(f"dataset '{root}' is LeRobotDataset {version}; cfgrl reads {VERSION} only{upgrade}")
    missing = [key for key in ("fps", "features", "data_path") if key not in info]
    if missing:
        raise CfgrlError(f"'{root / 'meta' / 'info.json'}' lacks {', '.join(missing)}; not a v3.0 dataset's info.json")


def check_feature(dataset: Dataset, key: str, dim: int, what: str) -> None:
    """``key`` exists with shape (dim,): the environment's state or action dimension."""
    feature = dataset.features.get(key)
    if feature is None:
        raise CfgrlError(f"dataset '{dataset.root}' has no feature '{key}' ({what}); its features: {', '.join(dataset.features)}")
    shape = tuple(feature.get("shape", ()))
    if shape != (dim,):
        raise CfgrlError(f"dataset '{dataset.root}': '{key}' has shape {list(shape)} but the environment takes a {what} of "
                         f"{dim} numbers; import into an environment of that dimension (LIBERO: 8-d state, 7-d action)")


def camera_map(items: list[str] | None, env_cameras: tuple[str, ...]) -> dict[str, str]:
    """{dataset camera key: env camera} from ``KEY=CAMERA`` items (default: lerobot's LIBERO keys)."""
    mapping = key_value_pairs(items, lambda item: f"--camera '{item}' is not valid; give distinct DATASET_KEY=ENV_CAMERA "
                              "pairs, e.g. observation.images.image=agentview")
    mapping = mapping or {k: v for k, v in DEFAULT_CAMERA_MAP.items() if v in env_cameras}
    unknown = sorted(set(mapping.values()) - set(env_cameras))
    if unknown or len(set(mapping.values())) != len(mapping):
        raise CfgrlError(f"--camera maps onto {sorted(mapping.values())}; map one dataset key onto each env camera "
                         f"({', '.join(env_cameras)})")
    return mapping


def check_cameras(dataset: Dataset, mapping: dict[str, str], env_cameras: tuple[str, ...]) -> None:
    have = dataset.camera_keys()
    for camera in env_cameras:
        keys = [k for k, c in mapping.items() if c == camera]
        if not keys or keys[0] not in have:
            given = f"'{keys[0]}' (mapped onto it) is not in the dataset" if keys else "no dataset key is mapped onto it"
            raise CfgrlError(f"the environment's camera '{camera}' has no images: {given}; the dataset's cameras: "
                             f"{', '.join(have) or 'none'}; map one with --camera KEY={camera}")


def episode_rows(dataset: Dataset, episode: pd.Series, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``episode`` from its data file's table, in frame order, checked for completeness."""
    index = int(episode["episode_index"])
    rows = table[table["episode_index"].to_numpy() == index].sort_values("frame_index")
    if len(rows) != int(episode["length"]) or not np.array_equal(rows["frame_index"].to_numpy(), np.arange(len(rows))):
        raise CfgrlError(f"dataset '{dataset.root}': episode {index} has {len(rows)} rows in {dataset.data_file(episode)} "
                         f"but its metadata says {int(episode['length'])} frames; the dataset is damaged: copy it again")
    return rows


def stacked(rows: pd.DataFrame, key: str) -> np.ndarray:
    """A vector feature's column as a (T, D) float32 array."""
    return np.stack(rows[key].to_numpy()).astype(np.float32)
