"""Frames of a dataset's cameras at the steps a store keeps: decoded from its MP4s with PyAV, or from
PNG/JPEG images held in the parquet rows.

lerobot packs many episodes into one MP4 and addresses each by ``[from_timestamp, to_timestamp)``.
``VideoFile`` decodes forward through a file, so importing the episodes of a file in order decodes
each frame once; it seeks only when asked for an earlier time. Every frame must be decoded (AV1 and
H.264 frames depend on earlier ones), but only the kept ones are converted to RGB and resized, in
swscale, which is most of what keeps importing fast.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from cfgrl.errors import CfgrlError


def damaged_video(path: Path, exc: Exception) -> CfgrlError:
    first = (str(exc).splitlines() or [""])[0]
    return CfgrlError(f"video '{path}' cannot be decoded ({type(exc).__name__}: {first}); the dataset is damaged: copy it again")


def probe(path: Path) -> None:
    """Open ``path`` and its video stream (a header read): one line if it is missing or not a video."""
    if not path.is_file():
        raise CfgrlError(f"video '{path}' is missing; the dataset is incomplete (copy it again, whole)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CfgrlError(f"'{path}' holds no video stream; the dataset is damaged: copy it again")
    except av.FFmpegError as exc:
        raise damaged_video(path, exc) from None


class VideoFile:
    """Forward reader of one MP4 with ``threads`` decoding threads."""

    def __init__(self, path: Path, fps: float, threads: int = 1):
        self.path, self.fps = path, fps
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise damaged_video(path, exc) from None
        self._stream.thread_count = threads
        self._frames = self._container.decode(self._stream)
        self._pending: av.VideoFrame | None = None  # decoded past the last episode's end: the next one's first frame
        self._last_time = -np.inf

    def close(self) -> None:
        self._container.close()

    def _next(self) -> av.VideoFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        try:
            frame = next(self._frames, None)
        except av.FFmpegError as exc:
            raise damaged_video(self.path, exc) from None
        if frame is not None:
            self._last_time = float(frame.time)
        return frame

    def _seek(self, time: float) -> None:
        self._container.seek(max(0, int(time / self._stream.time_base)), stream=self._stream, backward=True)
        self._frames, self._pending, self._last_time = self._container.decode(self._stream), None, -np.inf

    def frames(self, start: float, count: int, keep: np.ndarray, size: int) -> np.ndarray:
        """Frames ``keep`` (offsets in ``[0, count)``) of the episode starting at ``start`` seconds, as
        (len(keep), size, size, 3) uint8."""
        half = 0.5 / self.fps
        if self._last_time > start - half or (self._pending is not None and float(self._pending.time) > start - half):
            self._seek(start)
        wanted = {int(k): i for i, k in enumerate(keep)}
        out = np.empty((len(keep), size, size, 3), np.uint8)
        seen = 0
        while seen < count:
            frame = self._next()
            if frame is None:
                break
            offset = int(round((float(frame.time) - start) * self.fps))
            if offset < 0:
                continue
            if offset >= count:
                self._pending = frame
                break
            seen = offset + 1
            if offset in wanted:
                out[wanted.pop(offset)] = to_rgb(frame, size)
        if wanted:
            raise CfgrlError(f"video '{self.path}' ends before frame {min(wanted)} of the episode at {start:.3f} s "
                             f"({count} frames expected); the dataset is damaged: copy it again")
        return out


def to_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    """One frame as (size, size, 3) uint8: converted and resized (bilinear) in one swscale pass."""
    if frame.width == size and frame.height == size:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=size, height=size, format="rgb24", interpolation="BILINEAR").to_ndarray()


def decode_image(cell: object, where: str, size: int) -> np.ndarray:
    """An image column's cell (``{"bytes": PNG or JPEG, "path": ...}``) as (size, size, 3) uint8."""
    from PIL import Image, UnidentifiedImageError

    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise CfgrlError(f"{where}: the image cell holds no bytes (images kept as separate files are not read); "
                         "re-save the dataset with lerobot's finalize(), which embeds them")
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BOX)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CfgrlError(f"{where}: the image cannot be decoded ({type(exc).__name__}: {exc}); the dataset is damaged") from None
