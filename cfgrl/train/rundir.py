"""The run directory's guarantees: one writer, no leftovers of a killed run, a log without duplicates.

One ``train`` per run directory: rank 0 holds an exclusive ``flock`` on ``RUN_DIR/train.lock`` (its pid
inside) for the whole run; the kernel drops it when the process dies, SIGKILL included. The other
ranks of a torchrun job never write in the directory, so they take no lock.

Holding the lock, rank 0 removes what a killed run left (no live writer can own it): unfinished
checkpoints and deletions (hidden entries of ``checkpoints/`` and of each ``step_N/``), temporary
pointers and files (``.tmp-last-*``, ...), a half-built cache (``cache/.building-*``), and the records
``metrics.jsonl`` holds past the step the run continues from.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cfgrl import atomic
from cfgrl.errors import CfgrlError
from cfgrl.lockfile import exclusive

LOCK = "train.lock"
METRICS = "metrics.jsonl"
# The temporaries written directly in the run directory: pointers being swapped (checkpoint.point), the
# log being truncated. Only these: --out may be a directory that holds other things too.
TEMPORARY = (f"{atomic.TEMPORARY}last-*", f"{atomic.TEMPORARY}policy-*", f"{atomic.TEMPORARY}{METRICS}-*")


def check_out(run_dir: Path) -> None:
    """Refuse an --out that is, or lies under, something other than a directory (before anything is written)."""
    existing = next(p for p in (run_dir, *run_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "is" if existing == run_dir else f"lies under '{existing}', which is"
        raise CfgrlError(f"--out '{run_dir}' {where} a file, not a directory; give a new directory or a run directory")


@contextmanager
def sole_writer(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold its lock for the ``with`` block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    busy = (f"run directory '{run_dir}' is being written by another train (pid {{pid}}); wait for it to finish, "
            "or give another --out")
    with exclusive(run_dir / LOCK, busy):
        yield


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what killed runs left in ``run_dir`` (call it holding the lock); return the paths, relative."""
    ckpts = run_dir / "checkpoints"
    steps = [p for p in ckpts.iterdir() if p.is_dir() and not p.name.startswith(".")] if ckpts.is_dir() else []
    found = [*(p for pattern in TEMPORARY for p in run_dir.glob(pattern)), *(run_dir / "cache").glob(".building-*")]
    for folder in (ckpts, *steps):  # save_checkpoint, prune and the EMA export write under hidden names only
        found += list(folder.glob(".*"))
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return sorted(str(p.relative_to(run_dir)) for p in found)


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (the step the run continues from), and drop
    a line a kill cut short; return how many records were dropped."""
    path = run_dir / METRICS
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (at := _step(line)) is not None and at <= step]
    if len(kept) == len(lines):
        return 0
    atomic.write_text(path, "".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept)


def _step(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("step") if isinstance(record, dict) and isinstance(record.get("step"), int) else None
