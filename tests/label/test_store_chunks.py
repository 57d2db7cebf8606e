"""Nothing read silently wrong from a store: a missing or undecodable chunk stops every command in one line
naming the array, the chunk and its episodes, before anything is written; labels follow the replan_steps
the store was collected with."""

import json
import shutil

import pytest
from typer.testing import CliRunner

import label_stores
from cfgrl.cli import app
from cfgrl.errors import CfgrlError
from cfgrl.label import make_label_index
from cfgrl.config import CFGRLConfig
from cfgrl.store import Store, StoreWriter

from label_stores import Ep, sparse, write_store

runner = CliRunner()
EPISODES = [Ep(sparse(20 + 5 * i, i % 2 == 0), group=g, task=g) for g in range(2) for i in range(4)]
CHUNK_FILES = {  # the first chunk of each array; a store this small has one chunk per array
    "steps/reward": "c/0", "steps/action": "c/0/0", "steps/state": "c/0/0", "steps/done": "c/0", "steps/is_wait": "c/0",
    "frames/step": "c/0", "frames/wrist": "c/0/0/0/0", "episodes/success": "c/0", "episodes/step_start": "c/0",
}


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """A committed store and a label version of it, shared: each test damages its own copy."""
    root = tmp_path_factory.mktemp("intact")
    store = write_store(root / "s.zarr", EPISODES)
    make_label_index([store], CFGRLConfig(), None, root / "labels")
    return root


def copy(intact, tmp_path):
    shutil.copytree(intact, tmp_path / "d")
    return tmp_path / "d" / "s.zarr"


def snapshot(root):
    """Every file and its size and time, but the writers' lock files (taken and released, never data)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.suffix != ".lock"}


@pytest.mark.parametrize("array", CHUNK_FILES)
def test_a_missing_chunk_of_any_array_is_named_on_open(intact, tmp_path, array):
    path = copy(intact, tmp_path)
    (path / array / CHUNK_FILES[array]).unlink()
    with pytest.raises(CfgrlError) as info:
        Store(path)
    message = str(info.value)
    assert f"store '{path}': {array} lacks 1 of the 1 committed chunks: chunk {CHUNK_FILES[array]} (rows 0-" in message
    assert "episodes 0-7) is missing, which zarr would read as zeros" in message and "\n" not in message


@pytest.mark.parametrize("command, array", [
    (["label", "{store}"], "steps/reward"),
    (["train", "{store}", "--labels", "{labels}", "--out", "{root}/run"], "steps/action"),
    (["value", "{store}", "--out", "{root}/values"], "frames/wrist"),
    (["inspect", "{store}"], "episodes/success"),
    (["collect", "{store}", "--policy", "scripted:0.3", "-o", "collect.groups=1", "-o", "collect.group_size=2"], "frames/step"),
])
def test_every_command_stops_on_a_missing_chunk_and_writes_nothing(intact, tmp_path, command, array):
    path = copy(intact, tmp_path)
    (path / array / CHUNK_FILES[array]).unlink()
    root = tmp_path / "d"
    before = snapshot(root)
    labels = next((root / "labels").glob("*/manifest.json")).parent
    result = runner.invoke(app, [arg.format(store=path, labels=labels, root=root) for arg in command])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{array} lacks 1 of the 1 committed chunks: chunk {CHUNK_FILES[array]}" in lines[0]
    assert snapshot(root) == before


def test_an_undecodable_chunk_is_found_by_verify_and_refused_by_collect_and_stats(intact, tmp_path):
    from cfgrl.train.stats import store_stats

    path = copy(intact, tmp_path)
    (path / "steps" / "action" / "c" / "0" / "0").write_bytes(b"not zstd" * 4)
    assert runner.invoke(app, ["inspect", str(path)]).exit_code == 0  # a listing: nothing decoded but the episode table
    result = runner.invoke(app, ["inspect", str(path), "--verify"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "steps/action cannot be read: chunk c/0/0 (rows 0-" in result.output and "episodes 0-7) does not decode" in result.output
    with pytest.raises(CfgrlError, match="steps/action cannot be read: chunk c/0/0"):
        store_stats([Store(path)])  # train.stats=store
    before = snapshot(tmp_path / "d")
    with pytest.raises(CfgrlError, match="steps/action cannot be read: chunk c/0/0"):
        StoreWriter(path, label_stores.LAYOUT)  # collect's writer: it would read the chunk back to append
    assert snapshot(tmp_path / "d") == before  # no uncommitted tail truncated, nothing appended
    intact_store = Store(intact / "s.zarr")
    assert "verified: every committed chunk of the" in runner.invoke(app, ["inspect", str(intact_store.path), "--verify"]).output


def test_an_undecodable_episode_chunk_stops_label_and_inspect_in_one_line(intact, tmp_path):
    path = copy(intact, tmp_path)
    (path / "episodes" / "success" / "c" / "0").write_bytes(b"not zstd" * 4)
    for command in (["inspect", str(path)], ["label", str(path), "--out", str(tmp_path / "new")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert "episodes/success cannot be read: chunk c/0 (rows 0-7, episodes 0-7) does not decode" in result.output
    assert not (tmp_path / "new").exists()


def test_labels_follow_the_replan_steps_the_store_was_collected_with(tmp_path, monkeypatch):
    five = write_store(tmp_path / "five.zarr", EPISODES)
    for override in ("inference.replan_steps=10", "cfgrl.window_stride=7"):
        result = runner.invoke(app, ["label", str(five.path), "-o", override])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert "contradicts the stores, collected with replan_steps=5" in result.output or "multiple of inference.replan_steps=5" in result.output
    assert not (tmp_path / "five.labels").exists()
    assert runner.invoke(app, ["label", str(five.path)]).exit_code == 0
    manifest = json.loads(next((tmp_path / "five.labels").glob("*/manifest.json")).read_text())
    assert manifest["settings"]["replan_steps"] == 5
    monkeypatch.setattr(label_stores, "REPLAN", 10)
    ten = write_store(tmp_path / "ten.zarr", EPISODES)
    index = make_label_index([ten], CFGRLConfig(), None, tmp_path / "ten.labels")  # the config's default is 5
    assert index.manifest["settings"]["replan_steps"] == 10 and set(index.windows["start"] % 10) == {0}
    with pytest.raises(CfgrlError, match="different inference.replan_steps"):
        make_label_index([five, ten], CFGRLConfig(), None, tmp_path / "both")
