"""Writing a store: ``StoreWriter``, its one writer, which takes the lock, creates the store atomically
or truncates what a crashed writer left uncommitted, and appends whole episodes in commits (the
protocol is in the docstring of ``cfgrl.store``); and the chunk sizes it creates the arrays with."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr import AsyncArray
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync  # runs a coroutine on zarr's own event loop, as zarr's sync API does

from cfgrl import atomic
from cfgrl.schemas import STORE
from cfgrl.store import chunks
from cfgrl.store.faults import fault_point
from cfgrl.store.layout import EPISODE_COLUMNS, OFFSET_COLUMNS, STEP_ARRAYS, EpisodeData, StoreLayout
from cfgrl.store.lock import writer_lock
from cfgrl.store.reader import Store

STEP_CHUNK = 65536  # relabelling reads whole reward columns: big chunks keep that fast
# Frames per chunk: about 2 MiB of raw pixels (16 at LIBERO's 224², 170 at 64²). Every chunk is a
# file written through zarr's event loop (~1 ms each, whatever its size), so 16-frame chunks of small
# images made writing frames most of a commit; training and the value model read frames in blocks.
FRAME_CHUNK_BYTES = 2 * 2**20
EPISODE_CHUNK = 4096
# Frames compress at zstd level 1, not zarr's default (0, i.e. zstd's 3): 2.2-2.5x faster on rendered
# and decoded images for ~11% more bytes (bench/README.md, the import's cuts), and compressing frames
# was most of a commit's CPU. Readers decode any level; the stores already written stay as they are.
FRAME_COMPRESSOR = ZstdCodec(level=1)
FLUSH_BYTES = 256 * 2**20  # a writer commits before its buffer holds more: bounds memory with large images


class StoreWriter:
    """The one writer of a store: appends whole episodes, committing them in batches.

    Opening takes the store's lock (see the docstring of ``cfgrl.store``), then creates the store atomically or
    truncates the uncommitted tails a crashed writer left; ``close`` commits what is left and releases
    the lock. A commit rewrites the metadata and the last chunk of every array (~26): ~60 ms of CPU
    whatever its size, plus ~1 ms per 64x64 two-camera episode (bench/README.md). That fixed cost is
    why commits go by time, not by episode count: an append commits the buffer when the last commit
    is ``commit_seconds`` old, or before the buffer would exceed ``FLUSH_BYTES``. A fast scripted
    collection then pays ~60 ms per ``commit_seconds`` (~1%), and a crash loses the episodes finished
    since the last commit (recollected on resume), never a committed one. ``commit_seconds=0``
    commits every episode.
    """

    def __init__(self, path: str | Path, layout: StoreLayout, commit_seconds: float = 5.0):
        self.path = Path(path)
        self.layout = layout
        self.commit_seconds = commit_seconds
        self._buffer: list[EpisodeData] = []
        self._buffer_bytes = 0
        self._lock = writer_lock(self.path)  # before the store exists: a creation race ends here
        try:
            fault_point("store.locked")
            if not self.path.exists():
                self._create()
            store = Store(self.path)  # validates the schema and the root metadata
            store.require_layout(self.layout)
            for name in self._array_names():
                store.array(name)  # one clear line for a broken array's metadata
            self._root = zarr.open_group(str(self.path), mode="r+")
            # Handles opened once: opening an array reads its metadata file. Every chunk is written,
            # even an all-black frame chunk (zarr skips chunks equal to the fill value by default): a
            # missing chunk then always means lost data, which training refuses.
            with zarr.config.set({"array.write_empty_chunks": True}):
                self._arrays = {name: self._root[name] for name in self._array_names()}
            self._check_tails(store)
            self._truncate_uncommitted(store)
            self._committed, self._num_steps, self._num_frames = store.num_episodes, store.num_steps, store.num_frames
            self._last_commit = time.monotonic()  # opening counts as a commit
        except BaseException:
            self._lock.release()
            raise

    def _array_names(self) -> list[str]:
        return ([f"steps/{name}" for name in STEP_ARRAYS] + [f"frames/{cam}" for cam in self.layout.camera_names]
                + ["frames/step"] + [f"episodes/{name}" for name in EPISODE_COLUMNS])

    # -- opening -------------------------------------------------------------------------------
    def _create(self) -> None:
        """Build the empty store under a temporary name, then rename it into place."""
        tmp = self.path.with_name(f"{atomic.TEMPORARY}{self.path.name}")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a creator killed before its rename
        root = zarr.open_group(str(tmp), mode="w-")
        fault_point("store.creating")
        h, w, c = self.layout.image_shape
        dims = {"state": (self.layout.state_dim,), "action": (self.layout.action_dim,)}
        for name, dtype in STEP_ARRAYS.items():
            extra = dims.get(name, ())
            root.create_array(f"steps/{name}", shape=(0, *extra), chunks=(STEP_CHUNK, *extra), dtype=dtype)
        for cam in self.layout.camera_names:
            root.create_array(f"frames/{cam}", shape=(0, h, w, c), chunks=(frame_chunk(h * w * c), h, w, c), dtype="uint8",
                              compressors=FRAME_COMPRESSOR)
        root.create_array("frames/step", shape=(0,), chunks=(STEP_CHUNK,), dtype="int32")
        for name, dtype in EPISODE_COLUMNS.items():
            root.create_array(f"episodes/{name}", shape=(0,), chunks=(EPISODE_CHUNK,), dtype=str if dtype == "str" else dtype)
        root.attrs.update({**STORE.stamp(), **self.layout.to_attrs(), "num_episodes": 0, "created": time.time()})
        fault_point("store.created_tmp")
        os.rename(tmp, self.path)
        fault_point("store.renamed")

    def _check_tails(self, store: Store) -> None:
        """Decode the last committed chunk of every array, which the next commit reads back and rewrites:
        a damaged one is refused before anything (an uncommitted tail included) is written."""
        for name, extent in store.extents().items():
            last = chunks.last_chunk(self._arrays[name], extent.rows)
            if last is not None:
                store._refuse(chunks.undecodable(self.path, name, self._arrays[name], extent, first=last))

    def _truncate_uncommitted(self, store: Store) -> None:
        """Drop the rows a crashed writer appended after the last commit."""
        committed = {"steps": store.num_steps, "frames": store.num_frames, "episodes": store.num_episodes}
        for name, arr in self._arrays.items():
            rows = committed[name.split("/")[0]]
            if arr.shape[0] != rows:
                arr.resize((rows, *arr.shape[1:]))

    # -- writing -------------------------------------------------------------------------------
    def append(self, episode: EpisodeData) -> None:
        if not self._lock.held:
            raise RuntimeError(f"the writer of '{self.path}' is closed")
        self._validate(episode)
        size = episode_bytes(episode)
        if self._buffer and self._buffer_bytes + size > FLUSH_BYTES:
            self.flush()
        self._buffer.append(episode)
        self._buffer_bytes += size
        if time.monotonic() - self._last_commit >= self.commit_seconds:
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
        """Commit the buffer: write its rows right after the committed rows of every array (over
        whatever a failed commit left there), then bump num_episodes."""
        self._last_commit = time.monotonic()
        if not self._buffer:
            return
        batch, self._buffer, self._buffer_bytes = self._buffer, [], 0
        rows = self._rows(batch)
        starts = {"steps": self._num_steps, "frames": self._num_frames, "episodes": self._committed}
        sync(_write_all([(self._arrays[name].async_array, starts[name.split("/")[0]], values)
                         for name, values in rows.items()]))
        fault_point("store.appended")
        self._committed += len(batch)
        self._num_steps += len(rows["steps/action"])
        self._num_frames += len(rows["frames/step"])
        self._root.attrs["num_episodes"] = self._committed  # the commit

    def _rows(self, batch: list[EpisodeData]) -> dict[str, np.ndarray]:
        """The new rows of every array for ``batch``, its offsets following the committed rows."""
        lengths = np.array([ep.length for ep in batch], dtype=np.int64)
        frame_counts = np.array([len(ep.frame_step) for ep in batch], dtype=np.int64)
        offsets = {
            "step_start": self._num_steps + np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            "length": lengths,
            "frame_start": self._num_frames + np.concatenate([[0], np.cumsum(frame_counts)[:-1]]),
            "frame_count": frame_counts,
        }
        rows = {f"steps/{name}": np.concatenate([getattr(ep, name) for ep in batch]).astype(dtype)
                for name, dtype in STEP_ARRAYS.items()}
        rows.update({f"frames/{cam}": np.concatenate([ep.frames[cam] for ep in batch]) for cam in self.layout.camera_names})
        rows["frames/step"] = np.concatenate([ep.frame_step for ep in batch]).astype(np.int32)
        for name, dtype in EPISODE_COLUMNS.items():
            values = offsets[name] if name in offsets else [ep.meta[name] for ep in batch]
            rows[f"episodes/{name}"] = np.asarray(values, dtype=str if dtype == "str" else dtype)
        return rows

    def close(self) -> None:
        """Commit the buffer and release the lock (also after a failed commit: the next writer truncates)."""
        try:
            self.flush()
        finally:
            self._lock.release()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def frame_chunk(frame_bytes: int) -> int:
    """Frames per chunk of a camera array (16 to 1024)."""
    return int(np.clip(FRAME_CHUNK_BYTES // frame_bytes, 16, 1024))


def episode_bytes(episode: EpisodeData) -> int:
    return sum(a.nbytes for a in (episode.state, episode.action, *episode.frames.values()))


async def _write_rows(arr: AsyncArray, start: int, values: np.ndarray) -> None:
    """``values`` as the rows from ``start`` on, the array cut or grown to end with them."""
    await arr.resize((start + len(values), *arr.shape[1:]))
    await arr.setitem(slice(start, None), values)


async def _write_all(writes: list[tuple[AsyncArray, int, np.ndarray]]) -> None:
    """Every array's rows in one event-loop call, so zarr overlaps their reads, encodings and file
    writes: a commit of 64 episodes took 18% less time and 26% less CPU than array after array.
    All writes finish before the first error is raised (a retried commit must not race them)."""
    results = await asyncio.gather(*(_write_rows(*write) for write in writes), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
