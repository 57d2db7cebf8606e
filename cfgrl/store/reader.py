"""Reading a store: ``Store``, a read-only view of its committed episodes (the first ``num_episodes``
rows of every array: what a crashed writer left after them is never read), and ``open_stores`` for
the stages that take several. Opening refuses, in one line naming the file and what to do, a store
that is absent, not Zarr, of another schema, with broken metadata or with a committed chunk missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from cfgrl.errors import CfgrlError
from cfgrl.schemas import STORE
from cfgrl.store import chunks
from cfgrl.store.chunks import Extent
from cfgrl.store.layout import EPISODE_COLUMNS, STEP_ARRAYS, StoreLayout, episode_frames


def _require(path: Path) -> None:
    if not path.exists():
        raise CfgrlError(f"store '{path}' does not exist (create it with `cfgrl collect {path}`)")
    if not (path / "zarr.json").is_file():
        raise CfgrlError(f"'{path}' is not a Zarr store (no zarr.json); give a directory written by `cfgrl collect`")


def _unreadable(path: Path, meta: Path, what: str) -> CfgrlError:
    return CfgrlError(f"store '{path}': {meta} {what}; restore the store from a copy, or delete it and collect it again")


class Store:
    """Read-only view of the committed episodes of one store. Arrays are opened lazily, so code
    that reads only rewards and dones never touches the image chunks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _require(self.path)
        meta = self.path / "zarr.json"
        try:
            self._root = zarr.open_group(str(self.path), mode="r")
            attrs = dict(self._root.attrs)
        except (ValueError, KeyError, TypeError) as err:  # json.JSONDecodeError is a ValueError
            raise _unreadable(self.path, meta, f"is truncated or corrupt ({type(err).__name__}: {err})") from None
        if "schema" not in attrs:
            raise _unreadable(self.path, meta, "holds no cfgrl attributes (a creation killed by an older cfgrl, or not a cfgrl store)")
        STORE.check(attrs, f"store '{self.path}'")
        try:
            self.layout = StoreLayout.from_attrs(attrs)
            self.num_episodes = int(attrs["num_episodes"])
        except (KeyError, TypeError, ValueError) as err:
            raise _unreadable(self.path, meta, f"has incomplete root attributes ({type(err).__name__}: {err})") from None
        self.attrs = attrs
        self._episodes: pd.DataFrame | None = None
        self._check_chunks()

    def _check_chunks(self) -> None:
        """Refuse a store missing a committed chunk (a listing: nothing is decoded but the episode table),
        since zarr would read it as zeros: rewards, actions, frame steps, outcomes silently wrong."""
        for column in EPISODE_COLUMNS:  # before the table they hold is read
            self._refuse(chunks.missing(self.path, f"episodes/{column}", self.array(f"episodes/{column}"), Extent(self.num_episodes)))
        for name, extent in self.extents().items():
            if not name.startswith("episodes/"):
                self._refuse(chunks.missing(self.path, name, self.array(name), extent))

    @staticmethod
    def _refuse(error: CfgrlError | None) -> None:
        if error is not None:
            raise error

    def extents(self) -> dict[str, Extent]:
        """Every array of the store with its committed rows and the episode owning each row."""
        ep = self.episodes
        steps = Extent(self.num_steps, ep.step_start.to_numpy(), ep.length.to_numpy())
        frames = Extent(self.num_frames, ep.frame_start.to_numpy(), ep.frame_count.to_numpy())
        out = {f"steps/{name}": steps for name in STEP_ARRAYS}
        out.update({f"frames/{name}": frames for name in (*self.layout.camera_names, "step")})
        out.update({f"episodes/{name}": Extent(self.num_episodes) for name in EPISODE_COLUMNS})
        return out

    def verify(self) -> int:
        """Decode every committed chunk (``cfgrl inspect --verify``); one line naming the first that fails.
        Returns how many arrays were read."""
        extents = self.extents()
        for name, extent in extents.items():
            self._refuse(chunks.undecodable(self.path, name, self.array(name), extent))
        return len(extents)

    def _read(self, name: str, extent: Extent, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Committed rows ``[lo, hi)`` (all by default) of array ``name``, or one line naming the chunk
        that does not decode."""
        array = self.array(name)
        try:
            return np.asarray(array[lo : extent.rows if hi is None else hi])
        except Exception:  # whatever the codec raises on a damaged chunk: find and name it
            error = chunks.undecodable(self.path, name, array, extent, first=lo // array.chunks[0])
            if error is None:
                raise
            raise error from None

    def block(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Committed rows ``[lo, hi)`` of array ``name`` ("steps/action", "frames/wrist"), or one line
        naming a damaged chunk."""
        return self._read(name, self.extents()[name], lo, hi)

    def array(self, name: str) -> zarr.Array:
        """The array ``name`` ("steps/reward", "episodes/length", ...), or one line naming its broken metadata."""
        try:
            return self._root[name]
        except (ValueError, KeyError, TypeError) as err:
            raise _unreadable(self.path, self.path / name / "zarr.json", f"is missing, truncated or corrupt ({type(err).__name__}: {err})") from None

    def require_layout(self, layout: StoreLayout) -> None:
        """Refuse to add episodes of another layout (cameras, image size, dimensions)."""
        if self.layout != layout:
            raise CfgrlError(f"store '{self.path}' holds {self.layout} but this run produces {layout}; write to a new store")

    @property
    def episodes(self) -> pd.DataFrame:
        """The committed episode table (one row per episode, index = episode id)."""
        if self._episodes is None:
            n = self.num_episodes
            self._episodes = pd.DataFrame({name: self._read(f"episodes/{name}", Extent(n)) for name in EPISODE_COLUMNS})
        return self._episodes

    @property
    def num_steps(self) -> int:
        ep = self.episodes
        return int((ep.step_start + ep.length).max()) if len(ep) else 0

    @property
    def num_frames(self) -> int:
        ep = self.episodes
        return int((ep.frame_start + ep.frame_count).max()) if len(ep) else 0

    def steps(self, name: str) -> zarr.Array:
        """A per-step array (rows past ``num_steps`` are uncommitted: slice within it)."""
        if name not in STEP_ARRAYS:
            raise KeyError(f"unknown step array '{name}'; known: {', '.join(STEP_ARRAYS)}")
        return self.array(f"steps/{name}")

    def frames(self, camera: str) -> zarr.Array:
        if camera not in self.layout.camera_names:
            raise KeyError(f"unknown camera '{camera}'; this store has {', '.join(self.layout.camera_names)}")
        return self.array(f"frames/{camera}")

    def frame_steps(self) -> np.ndarray:
        return self._read("frames/step", self.extents()["frames/step"])

    def replan_steps(self) -> list[int]:
        """The ``inference.replan_steps`` the episodes were collected with: the steps between consecutive
        frames of an episode, since frames exist at query steps only. Usually one value; none where no
        episode has two query steps, several where runs of different settings share the store."""
        episode, row = episode_frames(self.episodes.frame_start.to_numpy(), self.episodes.frame_count.to_numpy())
        steps = self.frame_steps().astype(np.int64)[row]
        same_episode = episode[1:] == episode[:-1]
        return [int(v) for v in np.unique(np.diff(steps)[same_episode])]

    def require_replan_steps(self, replan_steps: int) -> None:
        """Refuse to add episodes of another ``inference.replan_steps``: label windows a store at the query
        steps of one setting (frames exist there only), so it refuses a mixed store."""
        held = self.replan_steps()
        if held and held != [replan_steps]:
            raise CfgrlError(f"store '{self.path}' holds episodes collected with inference.replan_steps="
                             f"{', '.join(map(str, held))} but this run's is {replan_steps}, and label refuses a store "
                             f"of mixed settings; write to a new store, or set inference.replan_steps={held[0]}")

    def episode_steps(self, episode: int, name: str) -> np.ndarray:
        row = self.episodes.iloc[episode]
        return np.asarray(self.steps(name)[row.step_start : row.step_start + row.length])

    def fingerprint(self) -> str:
        """Identity of the committed content: run ids, episode ids and lengths, outcomes."""
        ep = self.episodes
        digest = hashlib.sha256()
        for column in ("run_id", "group_id", "rollout_index", "seed", "length", "success"):
            digest.update(column.encode())
            digest.update(np.ascontiguousarray(ep[column].to_numpy().astype(str)).astype("U").tobytes())
        return digest.hexdigest()[:16]

    def read_steps(self, name: str) -> np.ndarray:
        """The committed rows of a per-step array, or one line naming the chunk that cannot be decoded."""
        self.steps(name)  # an unknown name: KeyError
        return self._read(f"steps/{name}", self.extents()[f"steps/{name}"])

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def open_stores(paths: list[str | Path]) -> list[Store]:
    """Open several stores (every later stage accepts more than one)."""
    if not paths:
        raise CfgrlError("no store given; pass at least one store directory")
    stores = [Store(p) for p in paths]
    for store in stores:
        if store.num_episodes == 0:
            raise CfgrlError(f"store '{store.path}' has no finished episode yet")
    return stores

