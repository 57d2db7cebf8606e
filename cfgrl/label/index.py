"""The versioned label index on disk.

For a store ``DIR/NAME.zarr`` the versions live in ``DIR/NAME.labels/<version>/`` (with several
stores: under ``--out``, default beside the first)::

    <version>/windows.parquet     one row per window (columns: cfgrl.label.build.COLUMNS)
    <version>/manifest.json       schema stamp, settings, seed, stores + fingerprints, counts, created
    <version>/summary.txt         what `cfgrl label` printed
    <version>/advantages.png      histogram of the window advantages
    names/<name>.json             {"version": id}: an alias given with --name

The version id hashes the effective settings with the stores' fingerprints, so the same settings on
the same episodes reuse a version and nothing is ever overwritten. A version is written under a
hidden temporary name and renamed into place: a crash never leaves a half-written one visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cfgrl.config import CFGRLConfig
from cfgrl.errors import CfgrlError
from cfgrl.label.build import COLUMNS, label_windows, resolve_settings
from cfgrl.label.windows import StoreData
from cfgrl.label.windows import HORIZON
from cfgrl.schemas import LABEL_INDEX
from cfgrl.store import Store

MANIFEST = "manifest.json"
WINDOWS = "windows.parquet"
LATEST = "latest.json"
NAMES = "names"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Part of every version id: bumped whenever the same settings would label the same episodes
# differently, so a version made under an older rule is never reused. 2: under `keep` the RLOO
# sources label zero-variance groups by their outcome; window_return labels groups of one rollout
# from its estimate.
LABEL_RULES = 2


@dataclass
class LabelIndex:
    """One version of the label index: its manifest and its window table."""

    path: Path
    manifest: dict[str, Any]
    windows: pd.DataFrame
    reused: bool = False  # True when make_label_index found this version already on disk

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @classmethod
    def read(cls, path: Path) -> "LabelIndex":
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise CfgrlError(f"'{path}' is not a label index version (no {MANIFEST}); list versions with `cfgrl label --list STORE`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise CfgrlError(f"{manifest_path} is not valid JSON ({exc})") from None
        LABEL_INDEX.check(manifest, f"label index '{path}'")
        windows = pd.read_parquet(path / WINDOWS)
        found = {name: str(dtype) for name, dtype in windows.dtypes.items()}
        if found != COLUMNS:
            raise CfgrlError(f"label index '{path}': {WINDOWS} has columns {found}, expected {COLUMNS}")
        return cls(path=path, manifest=manifest, windows=windows)

    def check_stores(self, stores: list[Store]) -> None:
        """Raise unless ``stores`` hold exactly the episodes this index was labelled from."""
        expected = self.manifest["stores"]
        if len(stores) != len(expected):
            raise CfgrlError(f"label index {self.version} was made from {len(expected)} store(s), got {len(stores)}")
        for store, entry in zip(stores, expected):
            found = store.fingerprint()
            if found != entry["fingerprint"]:
                raise CfgrlError(
                    f"store '{store.path}' has fingerprint {found} but label index {self.version} was made from "
                    f"'{entry['path']}' with fingerprint {entry['fingerprint']}; relabel with `cfgrl label`"
                )


def labels_dir(store_path: str | Path) -> Path:
    """``DIR/NAME.zarr`` -> ``DIR/NAME.labels``."""
    path = Path(store_path).absolute()
    return path.with_name(path.stem + ".labels")


def version_id(settings: dict[str, Any], fingerprints: list[str]) -> str:
    payload = json.dumps({**LABEL_INDEX.stamp(), "label_rules": LABEL_RULES, "settings": settings, "fingerprints": fingerprints},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def list_versions(root: Path) -> list[dict[str, Any]]:
    """Every complete version under ``root``, oldest first, with the names that alias it."""
    if not root.is_dir():
        return []
    aliases: dict[str, list[str]] = {}
    for alias in sorted((root / NAMES).glob("*.json")):
        aliases.setdefault(json.loads(alias.read_text()).get("version", ""), []).append(alias.stem)
    found = []
    for child in root.iterdir():
        manifest = child / MANIFEST
        if child.name.startswith(".") or not manifest.is_file():
            continue  # hidden = a temporary directory of a write in progress or crashed
        meta = json.loads(manifest.read_text())
        found.append({**meta, "names": aliases.get(child.name, []), "path": str(child)})
    return sorted(found, key=lambda m: m.get("created", 0.0))


def _check_name(root: Path, name: str, version: str) -> None:
    if not NAME_PATTERN.match(name):
        raise CfgrlError(f"--name '{name}' is not valid; use letters, digits, '.', '_' and '-' only")
    alias = root / NAMES / f"{name}.json"
    if alias.is_file():
        current = json.loads(alias.read_text()).get("version")
        if current != version:
            raise CfgrlError(f"name '{name}' already points to version {current}; choose another --name (names are never moved)")


def _check_distinct(stores: list[Store], fingerprints: list[str]) -> None:
    """Each store once: the same store by another path, or a copy of it, would count every window twice."""
    first: dict[str, Store] = {}
    for store, fingerprint in zip(stores, fingerprints):
        if fingerprint in first:
            raise CfgrlError(
                f"stores '{first[fingerprint].path}' and '{store.path}' hold the same episodes (fingerprint "
                f"{fingerprint}: one store by two paths, a copy, or the same collection run twice); labelling both "
                "would count every window twice, pass one of them"
            )
        first[fingerprint] = store


def _write_atomic_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _write_version(root: Path, version: str, table: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Write every file under a hidden name, then rename the directory into place."""
    from cfgrl.label.report import summary_text, write_histogram  # matplotlib only when writing

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        table.to_parquet(tmp / WINDOWS, index=False)
        (tmp / "summary.txt").write_text(summary_text(manifest) + "\n")
        write_histogram(table.advantage.to_numpy(), manifest, tmp / "advantages.png")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, root / version)
        except OSError:
            if not (root / version / MANIFEST).is_file():  # a concurrent writer won with the same content
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_label_index(
    stores: list[Store],
    cfgrl_cfg: CFGRLConfig,
    replan_steps: int,
    out_dir: Path | None = None,
    name: str | None = None,
) -> LabelIndex:
    """Label every window of ``stores`` and save the version, or reuse it if it already exists."""
    if not stores:
        raise CfgrlError("no store given; pass at least one store directory")
    settings = resolve_settings(cfgrl_cfg, replan_steps)
    fingerprints = [store.fingerprint() for store in stores]
    _check_distinct(stores, fingerprints)
    version = version_id(settings, fingerprints)
    root = Path(out_dir).absolute() if out_dir is not None else labels_dir(stores[0].path)
    if name is not None:
        _check_name(root, name, version)
    reused = (root / version / MANIFEST).is_file()
    if not reused:
        table, counts = label_windows([StoreData.read(store) for store in stores], settings)
        manifest = {
            **LABEL_INDEX.stamp(),
            "version": version,
            "label_rules": LABEL_RULES,
            "settings": settings,
            "seed": settings["seed"],
            "horizon": HORIZON,
            "stores": [{"path": str(s.path.absolute()), "fingerprint": f} for s, f in zip(stores, fingerprints)],
            "counts": counts,
            "created": time.time(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_version(root, version, table, manifest)
    if name is not None:
        _write_atomic_json(root / NAMES / f"{name}.json", {"version": version})
    _write_atomic_json(root / LATEST, {"version": version})  # what a bare store path means from now on
    index = LabelIndex.read(root / version)
    index.reused = reused
    return index


def load_label_index(spec: str | Path) -> LabelIndex:
    """Open a version: a version directory; ``STORE@VERSION_OR_NAME``; or a store (or its
    ``.labels`` directory) = the version `cfgrl label` made or reused last (else the newest).
    Validates the schema version."""
    text = str(spec)
    path = Path(text)
    if (path / MANIFEST).is_file():
        return LabelIndex.read(path)
    store_part, at, ref = text.rpartition("@")
    if at:
        root = labels_dir(store_part) if not store_part.endswith(".labels") else Path(store_part)
        if (root / ref / MANIFEST).is_file():
            return LabelIndex.read(root / ref)
        alias = root / NAMES / f"{ref}.json"
        if alias.is_file():
            return LabelIndex.read(root / json.loads(alias.read_text())["version"])
        known = [v["version"] for v in list_versions(root)]
        raise CfgrlError(f"no label version or name '{ref}' for '{store_part}'; known versions: {', '.join(known) or 'none'}")
    root = path if path.name.endswith(".labels") else labels_dir(path)
    if (root / LATEST).is_file():
        latest = root / json.loads((root / LATEST).read_text())["version"]
        if (latest / MANIFEST).is_file():
            return LabelIndex.read(latest)
    versions = list_versions(root)
    if not versions:
        raise CfgrlError(f"no label index for '{text}' (looked in {root}); create one with `cfgrl label {text}`")
    return LabelIndex.read(Path(versions[-1]["path"]))
