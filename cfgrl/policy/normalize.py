"""Normalisation statistics (mean/std of state and action), saved inside every policy checkpoint.

Keeping the stats with the weights is what makes a checkpoint self-contained: a policy can never be
run with stats from another dataset by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfgrl.errors import CfgrlError

STATS_SCHEMA_VERSION = 1
# A dimension whose std is below this is (nearly) constant: it is scaled by 1 instead, so normalising
# never divides by ~0 and unnormalising never multiplies the model's output noise by ~0.
MIN_STD = 1e-6


def _vector(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise CfgrlError(f"normalisation stats {name} contain NaN or infinity")
    return array


@dataclass(frozen=True)
class NormStats:
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            object.__setattr__(self, name, _vector(getattr(self, name), name))
        if self.state_mean.shape != self.state_std.shape or self.action_mean.shape != self.action_std.shape:
            raise CfgrlError("normalisation stats: each mean must have the same length as its std")
        if np.any(self.state_std < 0) or np.any(self.action_std < 0):
            raise CfgrlError("normalisation stats: std must be non-negative")

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> "NormStats":
        return cls(np.zeros(state_dim), np.ones(state_dim), np.zeros(action_dim), np.ones(action_dim))

    @property
    def state_dim(self) -> int:
        return len(self.state_mean)

    @property
    def action_dim(self) -> int:
        return len(self.action_mean)

    def check_dims(self, state_dim: int, action_dim: int) -> None:
        if (self.state_dim, self.action_dim) != (state_dim, action_dim):
            raise CfgrlError(
                f"normalisation stats are for state/action dims {self.state_dim}/{self.action_dim}, "
                f"the policy uses {state_dim}/{action_dim}"
            )

    @staticmethod
    def safe_std(std: np.ndarray) -> np.ndarray:
        return np.where(std < MIN_STD, 1.0, std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": STATS_SCHEMA_VERSION,
            **{k: getattr(self, k).tolist() for k in ("state_mean", "state_std", "action_mean", "action_std")},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormStats":
        version = data.get("schema_version")
        if version != STATS_SCHEMA_VERSION:
            raise CfgrlError(f"normalisation stats schema version {version!r} is not supported (expected {STATS_SCHEMA_VERSION})")
        try:
            return cls(data["state_mean"], data["state_std"], data["action_mean"], data["action_std"])
        except KeyError as exc:
            raise CfgrlError(f"normalisation stats lack the field {exc.args[0]}") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "NormStats":
        return cls.from_dict(json.loads(Path(path).read_text()))
