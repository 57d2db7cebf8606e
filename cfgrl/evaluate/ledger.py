"""The append-only record of finished evaluation episodes, which makes an evaluation resumable.

``episodes.jsonl`` in the run directory: a header line (schema and version), then one JSON object
per finished episode, written and fsync'ed as soon as the episode ends (the per-episode commit). A
crash can only leave a partial last line, which is dropped on reopen; a rerun skips every episode
whose key is already recorded. The key names everything that decides an outcome — checkpoint
content, env/inference settings, role, w, suite, task, init state, seed — so a retrained checkpoint
or a changed setting never reuses stale episodes (``plan.episode_key``). One process at a time
writes a run directory (``run_lock``).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cfgrl.atomic import remove_temporaries
from cfgrl.errors import CfgrlError
from cfgrl.lockfile import exclusive
from cfgrl.schemas import EVAL_RESULTS

LEDGER_KIND = "episodes"
LOCK_NAME = "evaluate.lock"
# The files a run directory gets whole (``cfgrl.atomic``): what a killed writer may have left half of.
SHARD_MANIFEST = "shard.json"  # a shard's plan and place in it (cfgrl.evaluate.shards)
WRITTEN_WHOLE = ("results.json", "results.csv", SHARD_MANIFEST)
_SAMPLE_BYTES = 1 << 20  # bytes hashed at each end of a weight file: cheap even for a 15 GB PI0


def checkpoint_fingerprint(policy_dir: str | Path) -> str:
    """Identity of a checkpoint's content: names, sizes and the bytes at both ends of its files.

    A cfgrl checkpoint's config.json carries its full content hash (``policy_id``), so any retraining
    changes it. Only the top-level files count: a checkpoint is flat, and its ``eval/`` runs (this
    stage's default output) live inside it and must not change its identity as they grow."""
    root = Path(policy_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as f:
            digest.update(f.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                f.seek(size - _SAMPLE_BYTES)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def _committed_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[: raw.rfind(b"\n") + 1]  # a line without its newline was cut by a crash


def read_committed(path: str | Path) -> dict[str, dict[str, Any]]:
    """key -> record of every committed episode of a log, without writing anything ({} if none)."""
    path = Path(path)
    if not path.exists():
        return {}
    lines = _committed_bytes(path).decode().splitlines()
    if not lines:
        return {}
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise CfgrlError(f"'{path}' is not an evaluation episode log (its first line is not JSON)") from None
    EVAL_RESULTS.check(header, f"episode log '{path}'")
    if header.get("kind") != LEDGER_KIND:
        raise CfgrlError(f"'{path}' is not an evaluation episode log (kind {header.get('kind')!r})")
    records = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CfgrlError(f"episode log '{path}' line {number} is not valid JSON; fix or delete that line") from None
        records[record["key"]] = record
    return records


class EpisodeLedger:
    """The committed episodes of a run directory, and appends of new ones one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records = read_committed(self.path)
        complete = _committed_bytes(self.path) if self.path.exists() else b""
        if self.path.exists() and len(complete) != self.path.stat().st_size:
            with self.path.open("r+b") as f:  # drop the torn last line before appending after it
                f.truncate(len(complete))
        if not complete:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_lines([{**EVAL_RESULTS.stamp(), "kind": LEDGER_KIND}])

    def _write_lines(self, objs: list[dict[str, Any]]) -> None:
        with self.path.open("a") as f:
            f.writelines(json.dumps(obj, sort_keys=True) + "\n" for obj in objs)
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, record: dict[str, Any]) -> None:
        """Commit one finished episode (``record['key']`` must be set)."""
        self.extend([record])

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Commit finished episodes with one fsync (a merge copies thousands)."""
        self._write_lines(records)
        self.records.update((record["key"], record) for record in records)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One process per run directory (created here): ``cfgrl.lockfile`` on ``evaluate.lock`` inside it.
    Holding it, delete the temporaries a killed writer left."""
    run_dir.mkdir(parents=True, exist_ok=True)
    busy = f"run directory '{run_dir}' is in use by another evaluate (pid {{pid}}); wait for it to finish, or give another --out"
    with exclusive(run_dir / LOCK_NAME, busy):
        remove_temporaries(run_dir, WRITTEN_WHOLE)
        yield
