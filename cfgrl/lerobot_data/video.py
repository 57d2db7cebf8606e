"""Frames of a dataset's cameras at the steps a store keeps: decoded from its MP4s with PyAV, or from
PNG/JPEG images held in the parquet rows.

lerobot packs many episodes into one MP4 and addresses each by ``[from_timestamp, to_timestamp)``.
``VideoFile`` reads forward through a file, so importing the episodes of a file in order reads each
packet once; it seeks only when asked for an earlier time. A frame depends on the frames back to its
key frame, not on anything before it. In an AV1 stream (lerobot's default codec) a packet is one
frame in presentation order, so only the packets from the last key frame up to a kept frame are
decoded: with lerobot's GOP of 2 and a kept frame every 5, that is 3 of every 10 frames. Streams
that may reorder frames (H.264, HEVC) are decoded whole. Only the kept frames are converted to RGB
and resized, by one swscale context per file (setting one up costs more than the scaling itself).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import av
import numpy as np
from av.video.reformatter import VideoReformatter

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


# codecs whose packets are frames in presentation order: a key frame packet starts a self-contained run
IN_ORDER_CODECS = {"av1"}
LOW_DELAY = 1 << 19  # AV_CODEC_FLAG_LOW_DELAY: a frame comes out of the packet that holds it, with any thread count


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
        self._skip = self._stream.codec.canonical_name in IN_ORDER_CODECS
        if self._skip:
            self._stream.codec_context.flags |= LOW_DELAY
        self._scaler = VideoReformatter()
        self._start_reading()

    def close(self) -> None:
        self._container.close()

    def _start_reading(self) -> None:
        self._packets = self._container.demux(self._stream)
        self._undecoded: list[av.Packet] = []  # read since the last decoded packet or key frame, not decoded yet
        self._decoded: list[av.VideoFrame] = []  # decoded, not handed out yet (a decoder may return several at once)
        self._pending: tuple[float, Callable] | None = None  # read past the last episode's end: the next one's first frame
        self._last_time = -np.inf

    def _decode(self, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            return self._stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            raise damaged_video(self.path, exc) from None

    def _read(self) -> av.Packet | None:
        """The next packet of the stream; at its end the demuxer's empty one (which drains the decoder), then None."""
        try:
            return next(self._packets, None)
        except av.FFmpegError as exc:
            raise damaged_video(self.path, exc) from None

    def _next(self) -> tuple[float, Callable[[], av.VideoFrame]] | None:
        """The next frame's time and how to get the frame: decoded only if asked for, where the codec allows."""
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        while not self._decoded:
            packet = self._read()
            if packet is None:
                return None
            if self._skip and packet.size:
                if packet.is_keyframe:  # nothing before it is needed any more
                    self._undecoded = []
                self._undecoded.append(packet)
                self._last_time = float(packet.pts * packet.time_base)
                return self._last_time, self._lazy(packet)
            if not self._skip:  # in skip mode the decoder holds no frame at the end (low delay)
                self._decoded = self._decode(packet)
        frame = self._decoded.pop(0)
        self._last_time = float(frame.time)
        return self._last_time, lambda: frame

    def _lazy(self, packet: av.Packet) -> Callable[[], av.VideoFrame]:
        def get() -> av.VideoFrame:
            """Decode from the last key frame (or decoded packet) up to ``packet``, whose frame comes out last."""
            upto = self._undecoded.index(packet) + 1
            todo, self._undecoded = self._undecoded[:upto], self._undecoded[upto:]
            frames = [frame for p in todo for frame in self._decode(p)]
            if not frames or frames[-1].pts != packet.pts:
                raise damaged_video(self.path, ValueError(f"no frame came out of the packet at pts {packet.pts}"))
            return frames[-1]
        return get

    def _seek(self, time: float) -> None:
        self._container.seek(max(0, int(time / self._stream.time_base)), stream=self._stream, backward=True)
        self._stream.codec_context.flush_buffers()
        self._start_reading()

    def frames(self, start: float, count: int, keep: np.ndarray, size: int) -> np.ndarray:
        """Frames ``keep`` (offsets in ``[0, count)``) of the episode starting at ``start`` seconds, as
        (len(keep), size, size, 3) uint8."""
        half = 0.5 / self.fps
        if self._last_time > start - half or (self._pending is not None and self._pending[0] > start - half):
            self._seek(start)
        wanted = {int(k): i for i, k in enumerate(keep)}
        out = np.empty((len(keep), size, size, 3), np.uint8)
        seen = 0
        while seen < count:
            item = self._next()
            if item is None:
                break
            offset = int(round((item[0] - start) * self.fps))
            if offset < 0:
                continue
            if offset >= count:
                self._pending = item
                break
            seen = offset + 1
            if offset in wanted:
                out[wanted.pop(offset)] = self.to_rgb(item[1](), size)
        if wanted:
            raise CfgrlError(f"video '{self.path}' ends before frame {min(wanted)} of the episode at {start:.3f} s "
                             f"({count} frames expected); the dataset is damaged: copy it again")
        return out

    def to_rgb(self, frame: av.VideoFrame, size: int) -> np.ndarray:
        """One frame as (size, size, 3) uint8: converted and resized (bilinear) in one swscale pass, on this
        thread alone (the import's decoding thread)."""
        return self._scaler.reformat(frame, width=size, height=size, format="rgb24", interpolation="BILINEAR",
                                     threads=1).to_ndarray()


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
