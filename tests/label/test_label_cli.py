"""`cfgrl label`: what it prints and saves, --list, --name, --out, and one clear line on bad input."""

import json
import os
import shutil

import pytest
import zarr
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.store import StoreWriter

from label_stores import LAYOUT, Ep, sparse, write_store

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["label", *map(str, args)])


@pytest.fixture
def store(tmp_path):
    episodes = [Ep(sparse(20 + 5 * i, i % 2 == 0), group=g, task=g) for g in range(2) for i in range(4)]
    return write_store(tmp_path / "reach.zarr", episodes)


def test_label_prints_shares_per_task_and_dropout_rate_then_lists(store, tmp_path):
    result = run(store.path, "--name", "first", "-o", "cfgrl.label_scheme=ternary")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "task 0" in out and "task 1" in out and "overall" in out and "o=1" in out and "o=0" in out and "o=∅" in out
    assert "dropout hit rate among conditioned labels" in out and "wrote version" in out
    versions = [p for p in (tmp_path / "reach.labels").iterdir() if p.is_dir() and p.name != "names"]
    assert len(versions) == 1
    assert (versions[0] / "summary.txt").read_text().startswith("label index ")
    assert json.loads((tmp_path / "reach.labels" / "names" / "first.json").read_text()) == {"version": versions[0].name}
    again = run(store.path, "-o", "cfgrl.label_scheme=ternary")
    assert "reused existing version" in again.output
    listed = run("--list", store.path)
    assert listed.exit_code == 0 and versions[0].name in listed.output and "names: first" in listed.output


def test_several_stores_go_under_out(store, tmp_path):
    other = write_store(tmp_path / "more.zarr", [Ep(sparse(15, True), group=0), Ep(sparse(15, False), group=0)])
    result = run(store.path, other.path, "--out", tmp_path / "joint")
    assert result.exit_code == 0, result.output
    (version,) = [p for p in (tmp_path / "joint").iterdir() if p.is_dir()]
    manifest = json.loads((version / "manifest.json").read_text())
    assert [s["path"] for s in manifest["stores"]] == [str(store.path.absolute()), str(other.path.absolute())]
    assert "more.zarr" not in str(version) and not (tmp_path / "reach.labels").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["cfgrl.label_source=advantage"], "cfgrl.label_source 'advantage' is not valid; choose one of: episode_rloo, window_rloo, window_return, value, none"),
        (["cfgrl.label_scheme=quaternary"], "cfgrl.label_scheme 'quaternary' is not valid; choose one of: binary, ternary"),
        (["cfgrl.dropout_prob=1.5"], "cfgrl.dropout_prob must be in [0, 1], got 1.5"),
        (["cfgrl.window_stride=3"], "cfgrl.window_stride=3 must be a positive multiple of inference.replan_steps=5"),
    ],
)
def test_bad_settings_fail_with_one_line(store, tmp_path, overrides, message):
    result = run(store.path, *[a for o in overrides for a in ("-o", o)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "reach.labels").exists()


def test_empty_store_other_schema_and_no_signal_fail_with_one_line(tmp_path, store):
    StoreWriter(tmp_path / "empty.zarr", LAYOUT).close()
    result = run(tmp_path / "empty.zarr")
    assert result.exit_code == 2 and "has no finished episode yet" in result.output
    assert len(result.output.strip().splitlines()) == 1

    flat = write_store(tmp_path / "flat.zarr", [Ep(sparse(10, True), group=0), Ep(sparse(10, True), group=0)])
    result = run(flat.path)
    assert result.exit_code == 2 and "every group had the same outcome" in result.output
    assert not (tmp_path / "flat.labels").exists() or not any((tmp_path / "flat.labels").iterdir())
    assert run(flat.path, "-o", "cfgrl.label_source=none").exit_code == 0  # allowed for plain BC

    zarr.open_group(str(store.path), mode="r+").attrs["schema_version"] = 7
    result = run(store.path)
    assert result.exit_code == 2 and "schema version 7" in result.output


@pytest.mark.parametrize("how", ["same path", "symlink", "relative", "copy"])
def test_the_same_store_twice_is_refused_with_both_paths(store, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    if how == "same path":
        twice = store.path
    elif how == "symlink":
        twice = tmp_path / "link.zarr"
        os.symlink(store.path, twice)
    elif how == "relative":
        twice = os.path.relpath(store.path)
    else:
        twice = shutil.copytree(store.path, tmp_path / "copy.zarr")
    result = run(store.path, twice, "--out", tmp_path / "joint")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert f"stores '{store.path}' and '{twice}' hold the same episodes" in line and "every window twice" in line
    assert not (tmp_path / "joint").exists()


def test_label_reports_windows_of_single_rollout_groups(tmp_path):
    episodes = [Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0), Ep(sparse(10, True), group=1)]
    result = run(write_store(tmp_path / "mixed.zarr", episodes).path, "-o", "cfgrl.zero_variance_groups=keep")
    assert result.exit_code == 0, result.output
    assert ("groups of one rollout: 1 (no leave-one-out baseline: treated as zero-variance groups (keep)); their 2 "
            "windows: raw o=1 2, o=0 0, o=∅ 0, dropped 0") in result.output
    single = write_store(tmp_path / "eval.zarr", [Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=1)])
    result = run(single.path)
    assert result.exit_code == 2 and "every group holds one rollout" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = run(single.path, "-o", "cfgrl.label_source=window_return")
    assert result.exit_code == 0 and "groups of one rollout: 2 (window_return needs no baseline); their 4 windows" in result.output


@pytest.mark.parametrize("damage", [b"not zstd" * 4, None])
def test_a_damaged_reward_chunk_fails_with_one_line_naming_it(store, tmp_path, damage):
    chunk = store.path / "steps" / "reward" / "c" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(damage if damage is not None else data[: len(data) // 2])  # garbage, or cut short
    result = run(store.path)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"error: store '{store.path}': steps/reward cannot be read: chunk c/0 (rows 0-" in lines[0]
    assert "episodes 0-7) does not decode (RuntimeError: Zstd" in lines[0]
    assert "restore it from a copy" in lines[0]
    assert not (tmp_path / "reach.labels").exists()


def test_windows_take_the_chunk_of_the_policy_that_will_train(store, tmp_path):
    from cfgrl.label import load_label_index
    from cfgrl.policy import PI0Config, PI0Policy

    policy = PI0Policy(PI0Config.from_preset("tiny", chunk_size=10)).save_pretrained(tmp_path / "policy")
    result = run(store.path, "--policy", policy)
    assert result.exit_code == 0, result.output
    assert "windows of 10 actions" in result.output
    index = load_label_index(store.path)
    assert index.manifest["horizon"] == 10 and index.windows.num_valid.max() == 10
    fresh = run(store.path, "-o", "policy.chunk_size=20")  # a fresh preset's chunk, set
    assert "windows of 20 actions" in fresh.output and load_label_index(store.path).manifest["horizon"] == 20
    bad = run(store.path, "--policy", tmp_path)
    assert bad.exit_code == 2 and "is not a policy checkpoint (no config.json)" in bad.output
