"""A value model's output directory, as `cfgrl value` writes it and `cfgrl label` reads it (no torch here)::

    DIR/manifest.json        schema stamp, id, settings, env, cameras, tasks, L per suite, stores + fingerprints, metrics
    DIR/values.parquet       one row per stored frame: store, frame, episode, step, fold, target, value
    DIR/train_log.jsonl      the loss of each fold's model during training, then its held-out metrics
    DIR/calibration.png      predicted V against the empirical return on held-out episodes
    DIR/model_fold{0,1}.safetensors   the two cross-fitted models

``value`` of a frame comes from the model trained on the other fold of its store's episodes. The id
hashes the settings, the stores' fingerprints and the values themselves: another value model (other
settings, other data, another training) has another id, and a label version records it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cfgrl.errors import CfgrlError
from cfgrl.schemas import VALUE
from cfgrl.store import Store
from cfgrl.value.targets import Returns

MANIFEST = "manifest.json"
VALUES = "values.parquet"
COLUMNS = {"store": "int16", "frame": "int64", "episode": "int64", "step": "int32", "fold": "int8",
           "target": "float32", "value": "float32"}


def value_id(settings: dict[str, Any], fingerprints: list[str], table: pd.DataFrame) -> str:
    digest = hashlib.sha256(json.dumps({**VALUE.stamp(), "settings": settings, "fingerprints": fingerprints},
                                       sort_keys=True).encode())
    digest.update(np.ascontiguousarray(table["value"].to_numpy(np.float32)).tobytes())
    return digest.hexdigest()[:12]


def store_env(store: Store) -> str:
    """The one environment a store's episodes come from."""
    envs = store.episodes["env"].unique()
    if len(envs) != 1:
        raise CfgrlError(f"store '{store.path}' mixes episodes of envs {', '.join(map(str, envs))}; a value model reads one env")
    return str(envs[0])


@dataclass(frozen=True)
class ValueOutput:
    path: Path
    manifest: dict[str, Any]
    table: pd.DataFrame

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @classmethod
    def read(cls, path: str | Path) -> "ValueOutput":
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise CfgrlError(f"'{path}' is not a value model output (no {MANIFEST}); give the --out directory of `cfgrl value`")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except ValueError as exc:
            raise CfgrlError(f"value model '{path}': {MANIFEST} is not valid JSON ({exc}); run `cfgrl value` again") from None
        VALUE.check(manifest, f"value model '{path}'")
        try:
            table = pd.read_parquet(path / VALUES)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise CfgrlError(f"value model '{path}': {VALUES} cannot be read ({type(exc).__name__}: "
                             f"{(str(exc).splitlines() or [''])[0]}); run `cfgrl value` again") from None
        found = {name: str(dtype) for name, dtype in table.dtypes.items()}
        if found != COLUMNS:
            raise CfgrlError(f"value model '{path}': {VALUES} has columns {found}, expected {COLUMNS}")
        return cls(path, manifest, table)

    def frame_values(self, store: Store) -> np.ndarray:
        """V of every stored frame of ``store`` (its rows of frames/*), refusing a store this model did not value."""
        m = self.manifest
        env, cameras = store_env(store), list(store.layout.camera_names)
        if env != m["env"] or cameras != m["camera_names"]:
            raise CfgrlError(f"value model '{self.path}' was trained on env '{m['env']}' with cameras {', '.join(m['camera_names'])}, "
                             f"but store '{store.path}' holds env '{env}' with cameras {', '.join(cameras)}; "
                             "train one on this store with `cfgrl value`")
        fingerprint = store.fingerprint()
        index = next((i for i, s in enumerate(m["stores"]) if s["fingerprint"] == fingerprint), None)
        if index is None:
            raise CfgrlError(f"value model '{self.path}' holds no values for store '{store.path}' (fingerprint {fingerprint}; "
                             "it valued other episodes); run `cfgrl value` on the stores you label")
        rows = self.table[self.table["store"] == index]
        values = np.full(store.num_frames, np.nan)
        values[rows["frame"].to_numpy()] = rows["value"].to_numpy(np.float64)
        return values

    def returns(self, store: Store, env_reward: np.ndarray) -> Returns:
        """The store's RECAP rewards with the value model's failure penalty and L."""
        return Returns.of(str(store.path), store.episodes, env_reward, self.manifest["max_length"],
                          self.manifest["settings"]["failure_penalty"])
