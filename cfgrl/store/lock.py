"""The one-writer lock of a store: an exclusive ``flock`` on ``<store>.lock``, a file beside the store
holding the writer's pid, taken before the store is created and held until the writer closes (the
protocol is in the docstring of ``cfgrl.store``)."""

from __future__ import annotations

from pathlib import Path

from cfgrl.lockfile import PidLock


def writer_lock(store: Path) -> PidLock:
    """The exclusive lock on ``<store>.lock`` that makes a process the store's one writer."""
    store.parent.mkdir(parents=True, exist_ok=True)
    path = store.with_name(f"{store.name}.lock")
    return PidLock(path, f"store '{store}' is being written by process {{pid}} (lock {path}); one writer per store: "
                         "wait for it to finish, or write to another store")
