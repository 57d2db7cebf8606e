"""Schema identifiers of every on-disk format cfgrl writes, and the one check used on read.

Each artefact carries ``{"schema": NAME, "schema_version": N}`` in its metadata (Zarr root
attributes, JSON manifests, a policy's ``config.json``, a round's ``round.json``). Reading any other
name or version fails with one line that says what was found and what this cfgrl reads; the training
cache, which can always be rebuilt, is rebuilt instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfgrl.errors import CfgrlError


@dataclass(frozen=True)
class Schema:
    name: str
    version: int

    def stamp(self) -> dict[str, Any]:
        return {"schema": self.name, "schema_version": self.version}

    def matches(self, meta: dict[str, Any]) -> bool:
        """Whether ``meta`` carries this stamp (for a reader that rebuilds, rather than refuses, anything else)."""
        return isinstance(meta, dict) and meta.get("schema") == self.name and meta.get("schema_version") == self.version

    def check(self, meta: dict[str, Any], where: str) -> None:
        found_name, found_version = meta.get("schema"), meta.get("schema_version")
        if found_name != self.name:
            raise CfgrlError(f"{where} is not a {self.name} (its schema is {found_name!r})")
        if found_version != self.version:
            raise CfgrlError(
                f"{where} has {self.name} schema version {found_version}; this cfgrl reads version "
                f"{self.version} only (re-create it, or use the cfgrl release that wrote it)"
            )


STORE = Schema("cfgrl.store", 2)  # 2: the episode column init_config
LABEL_INDEX = Schema("cfgrl.label_index", 1)
POLICY = Schema("cfgrl.policy", 1)
TRAIN_CHECKPOINT = Schema("cfgrl.train_checkpoint", 1)
EVAL_RESULTS = Schema("cfgrl.eval_results", 2)
ROUND = Schema("cfgrl.round", 2)
TRAIN_CACHE = Schema("cfgrl.train_cache", 1)
VALUE = Schema("cfgrl.value", 1)
LORA_ADAPTER = Schema("cfgrl.lora_adapter", 1)
DEMO_REPORT = Schema("cfgrl.demo_report", 1)
LEROBOT_EXPORT = Schema("cfgrl.lerobot_export", 1)  # meta/cfgrl_export.json of `cfgrl export-dataset`
LEROBOT_ADVANTAGES = Schema("cfgrl.lerobot_advantages", 1)  # meta/advantages_<version>.parquet's metadata
BENCH = Schema("cfgrl.bench", 1)  # a bench script's figures (bench/_common.py, `--json OUT`)
STUDY = Schema("cfgrl.study", 1)  # scripts/metaworld_study.py: every arm's validation curves (study.json)
STUDY_TEST = Schema("cfgrl.study_test", 1)  # its reports on test (test_ARM.json, one per arm reported)
