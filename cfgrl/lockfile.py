"""An exclusive advisory lock on a file that holds its holder's pid: one writer per store, per label
root, per training or evaluation run directory.

``fcntl.flock`` on an open file: the kernel drops it when the holder exits, even by SIGKILL, so a
killed writer never leaves a stale lock behind. The file itself stays (removing it would let two
processes lock two different files under one name); the pid in it is cleared on release.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cfgrl.errors import CfgrlError


class PidLock:
    """Hold the lock on ``path`` (created if absent) from construction until ``release``.

    ``busy``: the one-line message when another process holds it, ``{pid}`` standing for the holder's
    pid; ``None`` waits for the holder to release it instead."""

    def __init__(self, path: Path, busy: str | None) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise CfgrlError(f"cannot create the lock file {self.path} ({err.strerror}); use a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise CfgrlError(busy.replace("{pid}", holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale pid for the next loser to report
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _holder(fd: int) -> str:
    """The holder writes its pid right after locking; a loser reading in between waits for it."""
    for _ in range(100):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


@contextmanager
def exclusive(path: Path, busy: str | None) -> Iterator[None]:
    """``PidLock`` for the ``with`` block."""
    lock = PidLock(path, busy)
    try:
        yield
    finally:
        lock.release()
