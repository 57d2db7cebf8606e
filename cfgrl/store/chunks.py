"""Every committed chunk of a store accounted for, before anything reads it.

Zarr reads an absent chunk as its fill value: a deleted ``steps/reward`` chunk reads as zero rewards,
a deleted ``frames/step`` chunk puts every frame at step 0, without a word. The store writer writes
every chunk, an empty one included (``write_empty_chunks``), so under the committed rows an absent
chunk file is always lost data. ``missing`` is a listing (one ``stat`` per chunk, nothing decoded);
``undecodable`` decodes chunk by chunk (``cfgrl inspect --verify``, and to name the chunk behind a
failed read). Both name the array, the chunk and the episodes it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from cfgrl.errors import CfgrlError

RESTORE = "the store is damaged: restore it from a copy, or delete it and recollect it"


@dataclass(frozen=True)
class Extent:
    """The committed rows of an array and which episode owns each: episode ``e`` owns rows
    ``[start[e], start[e] + count[e])``; ``start`` None means row ``e`` is episode ``e`` (episodes/*)."""

    rows: int
    start: np.ndarray | None = None
    count: np.ndarray | None = None

    def episodes(self, lo: int, hi: int) -> str:
        """The episodes that own a row of ``[lo, hi)``, as text."""
        if self.start is None:
            first, last = lo, hi - 1
        else:
            owns = (self.start < hi) & (self.start + self.count > lo) & (self.count > 0)
            found = np.flatnonzero(owns)
            if not len(found):
                return "no episode"
            first, last = int(found[0]), int(found[-1])
        return f"episode {first}" if first == last else f"episodes {first}-{last}"


def _chunk_key(array: zarr.Array, i: int) -> str:
    return array.metadata.encode_chunk_key((i, *([0] * (array.ndim - 1))))


def _rows_of(array: zarr.Array, i: int, rows: int) -> tuple[int, int]:
    size = array.chunks[0]
    return i * size, min((i + 1) * size, rows)


def _describe(name: str, array: zarr.Array, i: int, extent: Extent) -> str:
    lo, hi = _rows_of(array, i, extent.rows)
    return f"chunk {_chunk_key(array, i)} (rows {lo}-{hi - 1}, {extent.episodes(lo, hi)})"


def missing(store: Path, name: str, array: zarr.Array, extent: Extent) -> CfgrlError | None:
    """The error naming the committed chunks of ``array`` whose files are absent, or None."""
    total = -(-extent.rows // array.chunks[0])
    absent = [i for i in range(total) if not (store / name / _chunk_key(array, i)).is_file()]
    if not absent:
        return None
    more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
    return CfgrlError(f"store '{store}': {name} lacks {len(absent)} of the {total} committed chunks: "
                      f"{_describe(name, array, absent[0], extent)}{more} is missing, which zarr would read as zeros; {RESTORE}")


def undecodable(store: Path, name: str, array: zarr.Array, extent: Extent, first: int = 0) -> CfgrlError | None:
    """Decode the committed chunks from chunk ``first`` on; the error naming the first that fails, or None."""
    for i in range(first, -(-extent.rows // array.chunks[0])):
        lo, hi = _rows_of(array, i, extent.rows)
        try:
            array[lo:hi]
        except Exception as exc:  # whatever the codec raises on a damaged chunk (Zstd: RuntimeError)
            reason = (str(exc).splitlines() or [""])[0]
            return CfgrlError(f"store '{store}': {name} cannot be read: {_describe(name, array, i, extent)} does not decode "
                              f"({type(exc).__name__}: {reason}); {RESTORE}")
    return None


def last_chunk(array: zarr.Array, rows: int) -> int | None:
    """The chunk a writer appending after ``rows`` reads back and rewrites (None: the rows end on a chunk's edge)."""
    return rows // array.chunks[0] if rows % array.chunks[0] else None
