"""The versioned index on disk: reuse, names, loading, crash safety, never reading images."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from cfgrl.config import CFGRLConfig
from cfgrl.errors import CfgrlError
from cfgrl.label import labels_dir, list_versions, load_label_index, make_label_index
from cfgrl.store import Store

from label_stores import REPLAN, Ep, sparse, write_store


def varied_episodes(groups: int = 3, k: int = 4) -> list[Ep]:
    return [Ep(sparse(20 + 3 * i, (g + i) % 3 != 0), group=g, task=g % 2) for g in range(groups) for i in range(k)]


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "data" / "reach.zarr", varied_episodes())


def test_layout_manifest_and_pandas_readable(store, tmp_path):
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    assert idx.path == tmp_path / "data" / "reach.labels" / idx.version
    m = json.loads((idx.path / "manifest.json").read_text())
    assert m["schema"] == "cfgrl.label_index" and m["schema_version"] == 1 and m["horizon"] == 50
    assert m["stores"] == [{"path": str(store.path.absolute()), "fingerprint": store.fingerprint()}]
    assert m["settings"]["label_source"] == "episode_rloo" and m["settings"]["label_threshold"] == 0.0
    assert m["settings"]["window_stride"] == REPLAN and m["seed"] == 0
    assert m["counts"]["windows"] == len(idx.windows) and m["created"] > 0
    table = pd.read_parquet(idx.path / "windows.parquet")  # plain pandas reads it
    pd.testing.assert_frame_equal(table, idx.windows)
    assert (idx.path / "advantages.png").read_bytes()[:4] == b"\x89PNG"


def test_a_new_version_records_its_provenance_and_an_older_one_without_still_reads(store):
    """The manifest carries provenance.record() (outside the version id); one written before it did reads and is reused as before."""
    import cfgrl

    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    prov = json.loads((idx.path / "manifest.json").read_text())["provenance"]
    assert set(prov) == {"cfgrl_version", "git_commit", "git_dirty", "command", "utc"} and prov["cfgrl_version"] == cfgrl.__version__
    manifest = json.loads((idx.path / "manifest.json").read_text())
    del manifest["provenance"]
    (idx.path / "manifest.json").write_text(json.dumps(manifest))
    old = load_label_index(idx.path)
    assert "provenance" not in old.manifest and len(old.windows) == len(idx.windows)
    again = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    assert again.version == idx.version and again.reused


def test_same_settings_reuse_a_version_different_settings_make_another(store):
    first = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    created = first.manifest["created"]
    again = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    assert again.version == first.version and again.reused and again.manifest["created"] == created
    other = make_label_index([store], CFGRLConfig(dropout_prob=0.3), REPLAN, None, None)
    assert other.version != first.version and not other.reused
    versions = list_versions(labels_dir(store.path))
    assert [v["version"] for v in versions] == [first.version, other.version]
    for v in versions:  # both stay readable
        assert len(load_label_index(v["path"]).windows) == first.manifest["counts"]["windows"]
    # A setting that does not apply to the source (the reduce of window_return) names no new version.
    assert make_label_index([store], CFGRLConfig(window_return_reduce="mean"), REPLAN, None, None).version == first.version


def test_a_version_made_under_other_label_rules_is_never_reused(store, monkeypatch):
    """keep once labelled failed groups o = 1 with the same settings: such a version must not be reused."""
    from cfgrl.label import index

    keep = CFGRLConfig(zero_variance_groups="keep")
    current = make_label_index([store], keep, REPLAN, None, None)
    assert current.manifest["label_rules"] == index.LABEL_RULES
    monkeypatch.setattr(index, "LABEL_RULES", index.LABEL_RULES - 1)
    older = make_label_index([store], keep, REPLAN, None, None)
    assert older.version != current.version and not older.reused


def test_load_specs_names_and_newest(store, tmp_path):
    a = make_label_index([store], CFGRLConfig(), REPLAN, None, "base")
    b = make_label_index([store], CFGRLConfig(seed=1), REPLAN, None, None)
    assert load_label_index(str(store.path)).version == b.version  # newest
    assert load_label_index(f"{store.path}@{a.version}").version == a.version
    assert load_label_index(f"{store.path}@base").version == a.version
    assert load_label_index(a.path).version == a.version
    with pytest.raises(CfgrlError, match="no label version or name 'nope'"):
        load_label_index(f"{store.path}@nope")
    with pytest.raises(CfgrlError, match="already points to version"):
        make_label_index([store], CFGRLConfig(seed=1), REPLAN, None, "base")
    assert load_label_index(f"{store.path}@base").version == a.version  # the name was not moved


def test_dropout_seed_reproduces_and_rate_is_binomial(tmp_path):
    store = write_store(tmp_path / "big.zarr", [Ep(sparse(200, i % 2 == 0), group=i // 4) for i in range(24)])
    cfg = CFGRLConfig(label_scheme="ternary", dropout_prob=0.25, seed=5)
    idx = make_label_index([store], cfg, REPLAN, tmp_path / "x", None)
    same = make_label_index([store], cfg, REPLAN, tmp_path / "y", None)
    np.testing.assert_array_equal(idx.windows.dropout_hit, same.windows.dropout_hit)
    conditioned = idx.windows.raw_label.notna().sum()
    assert conditioned == len(idx.windows) == 24 * 40
    hits = idx.windows.dropout_hit.sum()
    assert abs(hits - 0.25 * conditioned) < 4 * np.sqrt(conditioned * 0.25 * 0.75)
    assert idx.manifest["counts"]["dropout_hit_rate"] == pytest.approx(hits / conditioned)
    other = make_label_index([store], CFGRLConfig(label_scheme="ternary", dropout_prob=0.25, seed=6), REPLAN, tmp_path / "x", None)
    assert (other.windows.dropout_hit.to_numpy() != idx.windows.dropout_hit.to_numpy()).any()


def test_check_stores_detects_other_content(store, tmp_path):
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    idx.check_stores([store])
    grown = write_store(tmp_path / "other.zarr", varied_episodes(groups=2))
    with pytest.raises(CfgrlError, match="fingerprint"):
        idx.check_stores([grown])


def test_relabelling_never_opens_image_arrays(store, tmp_path):
    reference = make_label_index([store], CFGRLConfig(), REPLAN, tmp_path / "ref", None).windows
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store.path, copy)
    chunks = [p for p in (copy / "frames" / "agentview").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    # every image chunk corrupt (an absent one is refused on open: the store lists its chunks, decoding none)
    for chunk in [*(copy / "frames" / "agentview" / "c").rglob("*"), *(copy / "frames" / "wrist" / "c").rglob("*")]:
        if chunk.is_file():
            chunk.write_bytes(b"garbage")
    table = make_label_index([Store(copy)], CFGRLConfig(), REPLAN, None, None).windows
    pd.testing.assert_frame_equal(table.drop(columns="store"), reference.drop(columns="store"))


def test_failure_while_writing_leaves_no_visible_version(store, monkeypatch):
    import cfgrl.label.report as report

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_histogram", fail)
    with pytest.raises(RuntimeError):
        make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    root = labels_dir(store.path)
    assert list_versions(root) == [] and [p.name for p in root.iterdir()] == ["label.lock"]  # the lock file stays


def test_killed_writer_leaves_no_visible_version(store):
    """A hard crash (no cleanup) after the table was written but before the rename."""
    script = textwrap.dedent(f"""
        import os
        import cfgrl.label.report as report
        from cfgrl.config import CFGRLConfig
        from cfgrl.label import make_label_index
        from cfgrl.store import Store
        report.write_histogram = lambda *a, **k: os._exit(9)
        make_label_index([Store({str(store.path)!r})], CFGRLConfig(), {REPLAN}, None, None)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    root = labels_dir(store.path)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == ["label.lock"]
    (leftover,) = root.glob(".tmp-*")  # the killed writer's half-written version
    assert (leftover / "windows.parquet").is_file()
    assert list_versions(root) == []
    with pytest.raises(CfgrlError, match="no label index"):
        load_label_index(store.path)
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)  # the next run completes normally
    assert load_label_index(store.path).version == idx.version
    assert not leftover.exists() and not list(root.glob(".*"))  # and removed what the killed one left


def test_another_schema_version_fails_clearly(store):
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    manifest = json.loads((idx.path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (idx.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CfgrlError, match="schema version 99"):
        load_label_index(idx.path)


def test_a_bare_store_means_the_version_labelled_last_even_when_reused(tmp_path):
    from cfgrl.config import CFGRLConfig
    from cfgrl.label import load_label_index, make_label_index
    from label_stores import Ep, sparse, write_store

    store = write_store(tmp_path / "s.zarr", [Ep(sparse(8, s), group=0) for s in (True, False, True, False)])
    first = make_label_index([store], CFGRLConfig(), 5)
    second = make_label_index([store], CFGRLConfig(dropout_prob=0.3), 5)
    assert load_label_index(store.path).version == second.version != first.version
    again = make_label_index([store], CFGRLConfig(), 5)
    assert again.reused and load_label_index(store.path).version == first.version


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else data[:8] + b"\xff" * 64 + data[72:])


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_window_table_is_one_line_naming_it(store, how):
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, None)
    _damage(idx.path / "windows.parquet", how)
    with pytest.raises(CfgrlError) as info:
        load_label_index(store.path)
    message = str(info.value)
    assert "\n" not in message and f"'{idx.path}': windows.parquet cannot be read" in message
    assert f"delete '{idx.path}' and run `cfgrl label`" in message


@pytest.mark.parametrize("content", ["{\"vers", "[]", "{\"version\": 3}"])
def test_a_damaged_latest_or_name_pointer_is_one_line_naming_it(store, content):
    idx = make_label_index([store], CFGRLConfig(), REPLAN, None, "base")
    root = labels_dir(store.path)
    (root / "latest.json").write_text(content)
    with pytest.raises(CfgrlError, match=r"latest.json is damaged .*delete it .*STORE@VERSION"):
        load_label_index(store.path)
    assert load_label_index(f"{store.path}@{idx.version}").version == idx.version  # what the message offers
    make_label_index([store], CFGRLConfig(), REPLAN, None, None)  # the next label run rewrites it
    assert load_label_index(store.path).version == idx.version
    (root / "names" / "base.json").write_text(content)
    with pytest.raises(CfgrlError, match=r"names/base.json is damaged .*give the name again"):
        load_label_index(f"{store.path}@base")
