"""MP4s of the first episodes of a run (both cameras side by side, every control step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfgrl.errors import CfgrlError

FPS = 20


def require_video_support() -> None:
    """Fail before any rollout when MP4s are asked for but the encoder is not installed."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise CfgrlError(
            "videos were asked for (collect.videos > 0) but imageio-ffmpeg is not installed; "
            "install it with `pip install imageio-ffmpeg` (or `pip install cfgrl[video]`), or set collect.videos=0"
        ) from None


def write_video(path: Path, frames: np.ndarray) -> None:
    """frames: (T, H, W, 3) uint8."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    with imageio.get_writer(tmp, fps=FPS, codec="libx264", macro_block_size=16, quality=8) as writer:
        for frame in frames:
            writer.append_data(frame)
    tmp.replace(path)
