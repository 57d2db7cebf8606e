"""Replacing a file whole: a reader (or a crash) sees the old content or the new, never part of it.

The text goes to a hidden sibling ``.tmp-NAME-PID`` first, then is renamed over ``NAME``. The pid
keeps concurrent writers of one file apart (LIBERO's workers write one config); the ``.tmp-``
prefix is what a directory's owner deletes, holding its lock, when a killed writer left one (label
roots, run directories, evaluation runs). Whole directories are written the same way by their
modules (a store, a label version, a checkpoint): built under a temporary name, then renamed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

TEMPORARY = ".tmp-"


def temporary(path: Path) -> Path:
    """The temporary sibling this process writes ``path`` through."""
    return path.with_name(f"{TEMPORARY}{path.name}-{os.getpid()}")


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = temporary(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only when the write or the rename failed


def remove_temporaries(directory: Path, names: Iterable[str]) -> None:
    """Delete what killed writers of ``directory/NAME`` left (call it holding the directory's lock)."""
    for name in names:
        for leftover in directory.glob(f"{TEMPORARY}{name}-*"):
            leftover.unlink(missing_ok=True)
