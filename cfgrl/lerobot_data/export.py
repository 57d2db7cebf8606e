"""`cfgrl export-dataset`: a store's episodes as a LeRobotDataset v3.0 that lerobot 0.6.1 loads.

One row per control step (wait steps included), each with the frame of its last query step: a store
keeps frames at query steps only and lerobot needs one in every row (the rows before an episode's first
query step, LIBERO's wait steps, hold its first frame). fps is the environment's control frequency.
Cameras are named so that `cfgrl import` maps them back: LIBERO's agentview and wrist become lerobot's
``observation.images.image`` and ``observation.images.wrist_image``, any other camera
``observation.images.<camera>``. Rows also carry ``next.reward``, ``next.done``, ``is_wait`` and the
episode's ``success``.

With ``--labels``, the version's windows of this store go to ``meta/advantages_<version>.parquet``
(RLinf's naming: keyed by ``episode_index`` and ``frame_index``, the window's first step; its advantage,
raw label o, label after dropout; the version's settings in the file's metadata), beside the dataset's
own files, which it does not change. ``meta/cfgrl_export.json`` says which store and version it came from.

The dataset is written under a hidden temporary name beside OUT and renamed into place: OUT is absent
or whole. One MP4 and one data file per camera and dataset: lerobot reads many episodes per file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from cfgrl import atomic
from cfgrl.errors import CfgrlError
from cfgrl.lerobot_data.dataset import DEFAULT_CAMERA_MAP, VERSION
from cfgrl.lerobot_data.stats import image_stats, sample_rows, vector_stats
from cfgrl.schemas import LEROBOT_ADVANTAGES, LEROBOT_EXPORT
from cfgrl.store import Store

# Control steps per second of each backend (lerobot's fps). LIBERO: robosuite's control_freq as LIBERO
# builds its envs; Meta-World: MuJoCo's 2.5 ms step x frame_skip 5; builtin: a kinematic toy with no
# clock of its own, given the rate of lerobot's LIBERO datasets.
CONTROL_HZ = {"libero": 20, "metaworld": 80, "builtin": 10}
ENCODERS = ("libsvtav1", "libaom-av1", "libx264")  # lerobot's default first
ENCODER_OPTIONS = {"libsvtav1": {"g": "2", "crf": "30", "preset": "12"}, "libaom-av1": {"g": "2", "crf": "30", "cpu-used": "8"},
                   "libx264": {"g": "2", "crf": "23"}}
CODEC_NAME = {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264"}
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def camera_key(camera: str) -> str:
    inverse = {cam: key for key, cam in DEFAULT_CAMERA_MAP.items()}
    return inverse.get(camera, f"observation.images.{camera}")


def encoder() -> str:
    for name in ENCODERS:
        if name in av.codecs_available:
            return name
    raise CfgrlError(f"this PyAV build has none of the encoders {', '.join(ENCODERS)}; install PyAV from PyPI (pip install av)")


def control_hz(store: Store) -> int:
    envs = sorted(set(store.episodes.env))
    if len(envs) != 1 or envs[0] not in CONTROL_HZ:
        raise CfgrlError(f"store '{store.path}' holds episodes of env(s) {envs}; export-dataset writes one env's episodes "
                         f"at its control frequency ({', '.join(f'{k} {v} Hz' for k, v in CONTROL_HZ.items())})")
    return CONTROL_HZ[envs[0]]


def row_frames(store: Store) -> np.ndarray:
    """(N,) the frame row (in frames/*) each step shows: its episode's last query step at or before it."""
    ep, steps = store.episodes, store.frame_steps().astype(np.int64)
    out = np.empty(store.num_steps, np.int64)
    for row in ep.itertuples():
        if row.frame_count == 0:
            raise CfgrlError(f"store '{store.path}': episode {row.Index} has no stored frame; lerobot needs one in every row")
        mine = steps[row.frame_start : row.frame_start + row.frame_count]
        last = np.searchsorted(mine, np.arange(row.length), side="right") - 1
        out[row.step_start : row.step_start + row.length] = row.frame_start + np.maximum(last, 0)
    return out


def export_dataset(store_path: Path, out: Path, labels: str | None = None) -> Path:
    """Write ``store_path``'s episodes (and the label version ``labels``) as a LeRobotDataset v3.0 at ``out``."""
    if out.exists():
        raise CfgrlError(f"'{out}' exists; export-dataset writes a new dataset: give a path that does not exist yet")
    store = Store(store_path)
    if store.num_episodes == 0:
        raise CfgrlError(f"store '{store.path}' has no finished episode yet")
    index = _label_windows(store, labels) if labels is not None else None
    fps = control_hz(store)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{atomic.TEMPORARY}{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        Writer(store, tmp, fps).write()
        if index is not None:
            write_advantages(store, tmp, *index)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _label_windows(store: Store, spec: str) -> tuple[str, dict[str, Any], pd.DataFrame]:
    """(version, manifest, this store's windows) of the label version ``spec``, refused if it does not label this store."""
    from cfgrl.label import load_label_index

    index = load_label_index(spec)
    fingerprint = store.fingerprint()
    numbers = [i for i, s in enumerate(index.manifest["stores"]) if s["fingerprint"] == fingerprint]
    if not numbers:
        raise CfgrlError(f"label version {index.version} was not made from store '{store.path}' (fingerprint {fingerprint}; "
                         f"it labels {', '.join(s['path'] for s in index.manifest['stores'])}); give a version of this store")
    windows = index.windows[index.windows.store == numbers[0]]
    return index.version, index.manifest, windows


class Writer:
    """Writes the data file, the videos, the episode table, tasks, stats and info.json of one export."""

    def __init__(self, store: Store, root: Path, fps: int):
        self.store, self.root, self.fps = store, root, fps
        self.ep = store.episodes
        self.tasks = list(dict.fromkeys(self.ep.prompt))
        self.frames = row_frames(store)

    def write(self) -> None:
        self.root.mkdir(parents=True)
        data = self.data_table()
        self._parquet(pa.Table.from_pandas(data, preserve_index=False), DATA_FILE)
        codec = encoder()
        for camera in self.store.layout.camera_names:
            self.encode(camera, codec)
        self.write_meta(data, codec)

    def data_table(self) -> pd.DataFrame:
        ep, n = self.ep, self.store.num_steps
        lengths = ep.length.to_numpy()
        episode = np.repeat(np.arange(len(ep)), lengths)
        frame_index = np.arange(n) - np.repeat(ep.step_start.to_numpy(), lengths)
        task_index = {t: i for i, t in enumerate(self.tasks)}
        state, action = self.store.read_steps("state"), self.store.read_steps("action")
        order = np.concatenate([np.arange(r.step_start, r.step_start + r.length) for r in ep.itertuples()])
        self.order = order  # store step row of each dataset row
        return pd.DataFrame({
            "observation.state": list(state[order]), "action": list(action[order]),
            "next.reward": self.store.read_steps("reward")[order], "next.done": self.store.read_steps("done")[order],
            "is_wait": self.store.read_steps("is_wait")[order], "success": ep.success.to_numpy()[episode],
            "timestamp": (frame_index / self.fps).astype(np.float32), "frame_index": frame_index.astype(np.int64),
            "episode_index": episode.astype(np.int64), "index": np.arange(n, dtype=np.int64),
            "task_index": ep.prompt.map(task_index).to_numpy()[episode].astype(np.int64),
        })

    def _parquet(self, table: pa.Table, relative: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_fixed_lists(table), path)

    def encode(self, camera: str, codec: str) -> None:
        """One MP4 of every row's frame, episodes one after another (lerobot's from/to timestamps)."""
        path = self.root / VIDEO_PATH.format(video_key=camera_key(camera), chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w, _ = self.store.layout.image_shape
        rows = self.frames[self.order]
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its settings to stderr for every file; errors only
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, self.fps, options=ENCODER_OPTIONS[codec])
            stream.pix_fmt, stream.width, stream.height = "yuv420p", w, h
            with tqdm(total=len(rows), unit="frame", desc=f"encode {camera}", dynamic_ncols=True) as bar:
                for lo in range(0, len(rows), 1024):
                    block = rows[lo : lo + 1024]
                    first, last = int(block.min()), int(block.max()) + 1
                    images = self.store.block(f"frames/{camera}", first, last)
                    for r in block:
                        for packet in stream.encode(av.VideoFrame.from_ndarray(images[r - first], format="rgb24")):
                            container.mux(packet)
                    bar.update(len(block))
            for packet in stream.encode():
                container.mux(packet)

    def episodes_table(self) -> pd.DataFrame:
        ep = self.ep
        lengths = ep.length.to_numpy()
        end = np.cumsum(lengths)
        table = {"episode_index": np.arange(len(ep), dtype=np.int64), "tasks": [[p] for p in ep.prompt], "length": lengths,
                 "data/chunk_index": np.zeros(len(ep), np.int64), "data/file_index": np.zeros(len(ep), np.int64),
                 "dataset_from_index": end - lengths, "dataset_to_index": end}
        for camera in self.store.layout.camera_names:
            key = camera_key(camera)
            table.update({f"videos/{key}/chunk_index": np.zeros(len(ep), np.int64), f"videos/{key}/file_index": np.zeros(len(ep), np.int64),
                          f"videos/{key}/from_timestamp": (end - lengths) / self.fps, f"videos/{key}/to_timestamp": end / self.fps})
        table.update({"meta/episodes/chunk_index": np.zeros(len(ep), np.int64), "meta/episodes/file_index": np.zeros(len(ep), np.int64)})
        return pd.DataFrame(table)

    def stats(self, data: pd.DataFrame) -> dict[str, Any]:
        stats = {key: vector_stats(np.stack(data[key].to_numpy())) for key in ("observation.state", "action")}
        for key in ("next.reward", "next.done", "is_wait", "success", "timestamp", "frame_index", "episode_index", "index", "task_index"):
            stats[key] = vector_stats(data[key].to_numpy()[:, None])
        rows = sample_rows(self.store.num_frames)
        for camera in self.store.layout.camera_names:
            frames = np.asarray(self.store.frames(camera).get_orthogonal_selection((rows,)))
            stats[camera_key(camera)] = {**image_stats(frames), "count": [len(data)]}
        return stats

    def features(self, codec: str) -> dict[str, Any]:
        h, w, c = self.store.layout.image_shape
        video = {"video.height": h, "video.width": w, "video.codec": CODEC_NAME[codec], "video.pix_fmt": "yuv420p",
                 "video.is_depth_map": False, "video.fps": self.fps, "video.channels": c, "has_audio": False}
        features = {camera_key(cam): {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"], "info": video}
                    for cam in self.store.layout.camera_names}
        features.update({
            "observation.state": {"dtype": "float32", "shape": [self.store.layout.state_dim], "names": None},
            "action": {"dtype": "float32", "shape": [self.store.layout.action_dim], "names": None},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            **{key: {"dtype": "bool", "shape": [1], "names": None} for key in ("next.done", "is_wait", "success")},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            **{key: {"dtype": "int64", "shape": [1], "names": None} for key in ("frame_index", "episode_index", "index", "task_index")},
        })
        return features

    def write_meta(self, data: pd.DataFrame, codec: str) -> None:
        self._parquet(pa.Table.from_pandas(self.episodes_table(), preserve_index=False), EPISODES_FILE)
        tasks = pd.DataFrame({"task_index": np.arange(len(self.tasks), dtype=np.int64)}, index=pd.Index(self.tasks, name="task"))
        self._parquet(pa.Table.from_pandas(tasks), "meta/tasks.parquet")
        info = {"codebase_version": VERSION, "robot_type": str(self.ep.env.iloc[0]), "total_episodes": len(self.ep),
                "total_frames": len(data), "total_tasks": len(self.tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
                "video_files_size_in_mb": 200, "fps": self.fps, "splits": {"train": f"0:{len(self.ep)}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": self.features(codec)}
        _json(self.root / "meta" / "info.json", info)
        _json(self.root / "meta" / "stats.json", self.stats(data))
        _json(self.root / "meta" / "cfgrl_export.json", {
            **LEROBOT_EXPORT.stamp(), "store": str(self.store.path.absolute()), "fingerprint": self.store.fingerprint(),
            "store_episodes": list(range(len(self.ep))), "control_hz": self.fps, "encoder": codec,
            "cameras": {cam: camera_key(cam) for cam in self.store.layout.camera_names}, "created": time.time()})


def _fixed_lists(table: pa.Table) -> pa.Table:
    """Vector columns as fixed-size lists of float32, as lerobot writes them."""
    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type) and pa.types.is_floating(field.type.value_type):
            column = table.column(i).combine_chunks()
            size = len(column[0]) if len(column) else 0
            fixed = pa.FixedSizeListArray.from_arrays(pa.compute.cast(column.flatten(), pa.float32()), size)
            table = table.set_column(i, field.name, fixed)
    return table


def _json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=4) + "\n")


def write_advantages(store: Store, root: Path, version: str, manifest: dict[str, Any], windows: pd.DataFrame) -> None:
    """meta/advantages_<version>.parquet: per window of this store, keyed by episode and first frame."""
    table = pd.DataFrame({
        "episode_index": windows.episode.to_numpy(np.int64), "frame_index": windows.start.to_numpy(np.int64),
        "num_valid": windows.num_valid.to_numpy(np.int64), "advantage": windows.advantage.to_numpy(np.float64),
        "o": windows.raw_label.astype("Int8"), "label": windows.label.astype("Int8"), "dropout_hit": windows.dropout_hit.to_numpy(bool),
    }).sort_values(["episode_index", "frame_index"], ignore_index=True)
    meta = {**LEROBOT_ADVANTAGES.stamp(), "version": version, "settings": manifest["settings"], "horizon": manifest["horizon"],
            "fingerprint": store.fingerprint(), "o": "1 optimal, 0 not optimal, null unconditional (∅)"}
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"cfgrl": json.dumps(meta).encode()})
    pq.write_table(arrow, root / "meta" / f"advantages_{version}.parquet")
