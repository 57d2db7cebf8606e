"""Normalisation statistics of state and action, saved inside every policy checkpoint.

Two kinds, both an affine map per dimension, ``x_norm = (x - offset) / scale``:
  mean_std  offset = mean, scale = std (PI0's; a (near-)constant dimension is scaled by 1)
  quantile  q01 -> -1, q99 -> +1: offset = (q01 + q99) / 2, scale = (q99 - q01) / 2 (the published
            π0.5 checkpoints'); a dimension whose q01..q99 range has zero width cannot be scaled and
            is refused
Keeping the stats with the weights is what makes a checkpoint self-contained: a policy can never be
run with stats from another dataset, or of another kind, by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfgrl.errors import CfgrlError

KINDS = ("mean_std", "quantile")
# Version 1 holds mean/std only (and keeps the ids of the policies saved with it); version 2 names
# its kind, so a cfgrl that knows only mean/std refuses quantile stats instead of misreading them.
STATS_SCHEMA_VERSIONS = {"mean_std": 1, "quantile": 2}
# A dimension whose std is below this is (nearly) constant: it is scaled by 1 instead, so normalising
# never divides by ~0 and unnormalising never multiplies the model's output noise by ~0.
MIN_STD = 1e-6
FIELDS = {"mean_std": ("mean", "std"), "quantile": ("q01", "q99")}
NAMES = ("state", "action")


def _vector(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise CfgrlError(f"normalisation stats {name} contain NaN or infinity")
    return array


def check_kind(kind: str, where: str = "normalisation kind") -> str:
    if kind not in KINDS:
        raise CfgrlError(f"{where} {kind!r} is not known; accepted: {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class NormStats:
    """Stats of one ``kind``; the other kind's fields may be present too (read from a checkpoint that
    ships both) but only ``kind``'s are applied and saved."""

    state_mean: Any = None
    state_std: Any = None
    action_mean: Any = None
    action_std: Any = None
    kind: str = "mean_std"
    state_q01: Any = None
    state_q99: Any = None
    action_q01: Any = None
    action_q99: Any = None

    def __post_init__(self) -> None:
        check_kind(self.kind)
        for name in NAMES:
            for stat in (*FIELDS["mean_std"], *FIELDS["quantile"]):
                field = f"{name}_{stat}"
                object.__setattr__(self, field, _vector(getattr(self, field), field))
        lo_name, hi_name = FIELDS[self.kind]
        for name in NAMES:
            lo, hi = getattr(self, f"{name}_{lo_name}"), getattr(self, f"{name}_{hi_name}")
            if lo is None or hi is None:
                raise CfgrlError(f"{self.kind} normalisation stats lack {name}_{lo_name if lo is None else hi_name}")
            if lo.shape != hi.shape:
                raise CfgrlError(f"normalisation stats: {name}_{lo_name} and {name}_{hi_name} differ in length")
        if self.kind == "mean_std" and (np.any(self.state_std < 0) or np.any(self.action_std < 0)):
            raise CfgrlError("normalisation stats: std must be non-negative")
        if self.kind == "quantile":
            for name in NAMES:
                width = getattr(self, f"{name}_q99") - getattr(self, f"{name}_q01")
                if np.any(width <= 0):
                    dims = ", ".join(str(int(d)) for d in np.flatnonzero(width <= 0))
                    raise CfgrlError(
                        f"quantile normalisation stats: the q01..q99 range of {name} dim(s) {dims} has zero (or negative) "
                        "width, so it cannot be mapped to [-1, 1]; use policy.normalization=mean_std, or data in which it varies")

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> "NormStats":
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim), np.ones(action_dim))

    def _first(self, name: str) -> np.ndarray:
        return getattr(self, f"{name}_{FIELDS[self.kind][0]}")

    @property
    def state_dim(self) -> int:
        return len(self._first("state"))

    @property
    def action_dim(self) -> int:
        return len(self._first("action"))

    def check_dims(self, state_dim: int, action_dim: int) -> None:
        if (self.state_dim, self.action_dim) != (state_dim, action_dim):
            raise CfgrlError(
                f"normalisation stats are for state/action dims {self.state_dim}/{self.action_dim}, "
                f"the policy uses {state_dim}/{action_dim}"
            )

    @staticmethod
    def safe_std(std: np.ndarray) -> np.ndarray:
        return np.where(std < MIN_STD, 1.0, std)

    def affine(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) of ``name`` ("state" or "action"): ``x_norm = (x - offset) / scale``."""
        if self.kind == "mean_std":
            return getattr(self, f"{name}_mean"), self.safe_std(getattr(self, f"{name}_std"))
        q01, q99 = getattr(self, f"{name}_q01"), getattr(self, f"{name}_q99")
        return (q01 + q99) / 2, (q99 - q01) / 2

    def fields(self) -> dict[str, np.ndarray]:
        """The applied fields of ``kind``, by name (state_mean, ... or state_q01, ...)."""
        return {f"{name}_{stat}": getattr(self, f"{name}_{stat}") for name in NAMES for stat in FIELDS[self.kind]}

    def to_dict(self) -> dict[str, Any]:
        kind = {} if self.kind == "mean_std" else {"kind": self.kind}
        return {"schema_version": STATS_SCHEMA_VERSIONS[self.kind], **kind, **{k: v.tolist() for k, v in self.fields().items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormStats":
        version = data.get("schema_version")
        if version not in STATS_SCHEMA_VERSIONS.values():
            raise CfgrlError(f"normalisation stats schema version {version!r} is not supported (this cfgrl reads "
                             f"{', '.join(map(str, sorted(STATS_SCHEMA_VERSIONS.values())))})")
        kind = check_kind(data.get("kind", "mean_std"), "normalisation stats kind")
        missing = [f"{n}_{s}" for n in NAMES for s in FIELDS[kind] if f"{n}_{s}" not in data]
        if missing:
            raise CfgrlError(f"normalisation stats lack the field {missing[0]}")
        return cls(kind=kind, **{f"{n}_{s}": data[f"{n}_{s}"] for n in NAMES for s in FIELDS[kind]})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "NormStats":
        return cls.from_dict(json.loads(Path(path).read_text()))
