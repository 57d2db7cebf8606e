"""The versioned label index on disk.

For a store ``DIR/NAME.zarr`` the versions live in ``DIR/NAME.labels/<version>/`` (with several
stores: under ``--out``, default beside the first)::

    <version>/windows.parquet     one row per window (columns: cfgrl.label.build.COLUMNS)
    <version>/manifest.json       schema stamp, settings, seed, stores + fingerprints, value model, counts, created,
                                  provenance (cfgrl version, git commit, command line, UTC time; absent from older versions)
    <version>/summary.txt         what `cfgrl label` printed
    <version>/advantages.png      histogram of the window advantages
    names/<name>.json             {"version": id}: an alias given with --name
    latest.json                   {"version": id}: the version `cfgrl label` made or reused last
    label.lock                    held by the label run writing here (its pid inside)

The version id hashes the effective settings (the value model's id among them) with the stores' fingerprints, so the same settings on
the same episodes reuse a version and nothing is ever overwritten. A version is written under a
hidden temporary name (``.tmp-*``) and renamed into place: a crash never leaves a half-written one
visible. Writers take turns: each holds an exclusive ``flock`` on ``label.lock`` while it writes
(labelling itself runs outside it); the kernel releases it when its holder dies, SIGKILL included.
Holding it, a writer first deletes every ``.tmp-*`` there: their writers are gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa

from cfgrl import atomic, provenance
from cfgrl.config import CFGRLConfig, InferenceConfig
from cfgrl.errors import CfgrlError
from cfgrl.label.advantage import StoreValues
from cfgrl.label.build import COLUMNS, label_windows, resolve_settings
from cfgrl.label.windows import DEFAULT_HORIZON, StoreData, collected_replan
from cfgrl.lockfile import exclusive
from cfgrl.schemas import LABEL_INDEX
from cfgrl.store import Store
from cfgrl.value.output import ValueOutput

MANIFEST = "manifest.json"
WINDOWS = "windows.parquet"
LATEST = "latest.json"
LOCK = "label.lock"
TEMPORARY = atomic.TEMPORARY  # the prefix of everything being written under a label root
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
        if not (path / MANIFEST).is_file():
            raise CfgrlError(f"'{path}' is not a label index version (no {MANIFEST}); list versions with `cfgrl label --list STORE`")
        manifest = _read_manifest(path)
        LABEL_INDEX.check(manifest, f"label index '{path}'")
        try:
            windows = pd.read_parquet(path / WINDOWS)
        except PermissionError:
            raise  # not damage: the command's one line says which permission is missing
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _damaged(path, WINDOWS, f"cannot be read ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from None
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


def _damaged(version: Path, name: str, what: str) -> CfgrlError:
    """A version is never rewritten in place: deleting it lets `cfgrl label` write it again, whole."""
    return CfgrlError(f"label index '{version}': {name} {what}; delete '{version}' and run `cfgrl label` with the "
                      "same stores and settings again (it writes the same version)")


def _read_manifest(version: Path) -> dict[str, Any]:
    try:
        return json.loads((version / MANIFEST).read_text())
    except ValueError as exc:
        raise _damaged(version, MANIFEST, f"is not valid JSON ({exc})") from None


def _read_pointer(path: Path, fix: str) -> str:
    """The version id a ``latest.json`` or ``names/<name>.json`` holds; ``fix``: what to do when it is damaged."""
    try:
        version = json.loads(path.read_text())["version"]
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, str):
        raise CfgrlError(f"{path} is damaged (not {{\"version\": ID}}); {fix}")
    return version


def _latest(root: Path) -> str:
    return _read_pointer(root / LATEST, "delete it (the next `cfgrl label` of these stores writes it again), or give "
                                        "--labels STORE@VERSION (`cfgrl label --list STORE` lists the versions)")


def _alias(root: Path, name: str) -> str:
    return _read_pointer(root / NAMES / f"{name}.json", "delete it and give the name again with `cfgrl label --name`")


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
        aliases.setdefault(_alias(root, alias.stem), []).append(alias.stem)
    found = []
    for child in root.iterdir():
        manifest = child / MANIFEST
        if child.name.startswith(".") or not manifest.is_file():
            continue  # hidden = a temporary directory of a write in progress or crashed
        meta = _read_manifest(child)
        found.append({**meta, "names": aliases.get(child.name, []), "path": str(child)})
    return sorted(found, key=lambda m: m.get("created", 0.0))


def _check_name(root: Path, name: str, version: str) -> None:
    if not NAME_PATTERN.match(name):
        raise CfgrlError(f"--name '{name}' is not valid; use letters, digits, '.', '_' and '-' only")
    if (root / NAMES / f"{name}.json").is_file():
        current = _alias(root, name)
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
    atomic.write_text(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def _write_version(root: Path, version: str, table: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Write every file under a hidden name, then rename the directory into place."""
    from cfgrl.label.report import summary_text, write_histogram  # matplotlib only when writing

    tmp = root / f"{TEMPORARY}{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        table.to_parquet(tmp / WINDOWS, index=False)
        (tmp / "summary.txt").write_text(summary_text(manifest) + "\n")
        write_histogram(table.advantage.to_numpy(), manifest, tmp / "advantages.png")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.rename(tmp, root / version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _sole_writer(root: Path) -> Iterator[None]:
    """Hold ``root``'s lock (waiting for another label run's writes) and delete what killed writers left."""
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / LOCK, busy=None):
        for leftover in (*root.glob(f"{TEMPORARY}*"), *(root / NAMES).glob(f"{TEMPORARY}*")):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        yield


def make_label_index(
    stores: list[Store],
    cfgrl_cfg: CFGRLConfig,
    replan_steps: int | None,
    out_dir: Path | None = None,
    name: str | None = None,
    horizon: int = DEFAULT_HORIZON,
    value: ValueOutput | None = None,
) -> LabelIndex:
    """Label every window of ``stores`` (``horizon`` actions each: the policy's chunk) and save the
    version, or reuse it if it already exists (the horizon is one of the settings naming it).
    ``value``: the value model ``label_source: value`` reads (`cfgrl value`). ``replan_steps``: the one the
    user set, refused where it contradicts the stores'; None: the stores' own (``collected_replan``)."""
    if not stores:
        raise CfgrlError("no store given; pass at least one store directory")
    replan_steps = collected_replan(stores, replan_steps, InferenceConfig().replan_steps)
    settings = resolve_settings(cfgrl_cfg, replan_steps, horizon, value.id if value is not None else None)
    fingerprints = [store.fingerprint() for store in stores]
    _check_distinct(stores, fingerprints)
    version = version_id(settings, fingerprints)
    root = Path(out_dir).absolute() if out_dir is not None else labels_dir(stores[0].path)
    if root.exists() and not root.is_dir():
        raise CfgrlError(f"--out '{root}' is a file, not a directory; give the directory of the label versions (new or existing)")
    if name is not None:
        _check_name(root, name, version)
    reused = (root / version / MANIFEST).is_file()
    if not reused:
        datas = [StoreData.read(store) for store in stores]
        values = None if value is None else [StoreValues(value.frame_values(store), value.returns(store, data.reward))
                                             for store, data in zip(stores, datas)]
        table, counts = label_windows(datas, settings, values)
        manifest = {
            **LABEL_INDEX.stamp(),
            "version": version,
            "label_rules": LABEL_RULES,
            "settings": settings,
            "seed": settings["seed"],
            "horizon": horizon,
            "stores": [{"path": str(s.path.absolute()), "fingerprint": f} for s, f in zip(stores, fingerprints)],
            "value_model": None if value is None else {"id": value.id, "path": str(value.path.absolute())},
            "counts": counts,
            "created": time.time(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # not in the version id: the same settings on the same episodes are the same version whoever made it
            "provenance": provenance.record(),
        }
    with _sole_writer(root):
        if name is not None:
            _check_name(root, name, version)  # again: another run may have given it meanwhile
        if not reused and not (root / version / MANIFEST).is_file():  # nor written by another run meanwhile
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
        if (root / NAMES / f"{ref}.json").is_file():
            return LabelIndex.read(root / _alias(root, ref))
        known = [v["version"] for v in list_versions(root)]
        raise CfgrlError(f"no label version or name '{ref}' for '{store_part}'; known versions: {', '.join(known) or 'none'}")
    root = path if path.name.endswith(".labels") else labels_dir(path)
    if (root / LATEST).is_file():
        latest = root / _latest(root)
        if (latest / MANIFEST).is_file():
            return LabelIndex.read(latest)
    versions = list_versions(root)
    if not versions:
        raise CfgrlError(f"no label index for '{text}' (looked in {root}); create one with `cfgrl label {text}`")
    return LabelIndex.read(Path(versions[-1]["path"]))
