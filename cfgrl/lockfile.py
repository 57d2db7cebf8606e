"""An exclusive advisory lock on a file that holds its holder's pid.

``fcntl.flock`` on an open file: the kernel drops it when the holder exits, even by SIGKILL, so a
killed writer never leaves a stale lock behind. The file itself stays (removing it would let two
processes lock two different files under one name).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cfgrl.errors import CfgrlError


@contextmanager
def exclusive(path: Path, busy: str | None) -> Iterator[None]:
    """Hold the lock on ``path`` (created if absent) for the ``with`` block.

    ``busy``: the one-line message when another process holds it, ``{pid}`` standing for the holder's
    pid; ``None`` waits for the holder to release it instead."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "unknown"  # empty only while the holder is starting
            raise CfgrlError(busy.replace("{pid}", holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
