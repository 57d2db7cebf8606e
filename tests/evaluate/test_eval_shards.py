"""Evaluation across machines: shards of whole slots, merged into the unsharded run's results, and
what the merge refuses; one process per run directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.evaluate import load_results
from cfgrl.evaluate.ledger import read_committed

from eval_helpers import SETTINGS

pytestmark = pytest.mark.slow

OVERRIDES = [x for s in SETTINGS for x in ("-o", s)]


def _cli(*args: str):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.fixture(scope="module")
def shard_dirs(checkpoints, tmp_path_factory) -> list[Path]:
    """The conftest's evaluation (with its baseline) run as 2 shards through the CLI, one directory each."""
    policy, base = checkpoints
    root = tmp_path_factory.mktemp("shards")
    for i in range(2):
        result = _cli(policy, "--baseline", base, "--shard", i, "--num-shards", 2, "--out", root / f"s{i}", *OVERRIDES)
        assert result.exit_code == 0, result.output
        assert f"shard {i} of 2" in result.output
    return [root / "s0", root / "s1"]


def test_shards_hold_whole_slots_and_merge_into_the_unsharded_results_row_for_row(evaluated, shard_dirs, tmp_path):
    reference, run, _ = evaluated
    slots_of = []
    for i, d in enumerate(shard_dirs):
        manifest = json.loads((d / "shard.json").read_text())
        assert (manifest["shard"], manifest["num_shards"]) == (i, 2)
        assert not (d / "results.json").exists() and not (d / "results.csv").exists()  # a partial shard has no table
        arms_per_slot: dict[tuple, set] = {}
        for r in read_committed(d / "episodes.jsonl").values():
            arms_per_slot.setdefault((r["split"], r["task_id"], r["init_state_id"], r["repeat"]), set()).add((r["role"], r["cfg_scale"]))
        for (split, *_), arms in arms_per_slot.items():  # every w of a slot (and the baseline's test episode) in this shard
            assert arms == ({("policy", 1.0), ("policy", 2.0)} | ({("baseline", 0.0)} if split == "test" else set()))
        slots_of.append(set(arms_per_slot))
    assert not slots_of[0] & slots_of[1] and len(slots_of[0] | slots_of[1]) == 4  # 2 tasks x (test, validation)

    result = _cli("--merge", *shard_dirs, "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    assert "chosen w =" in result.output
    merged = load_results(tmp_path / "merged")
    assert merged["rows"] == load_results(run)["rows"]
    for key in ("chosen_cfg_scale", "chosen_on", "validation", "cfg_scales", "baseline_cfg_scale", "episodes_per_w", "suites", "protocol"):
        assert merged[key] == reference[key], key
    assert merged["shards"] == [str(d) for d in shard_dirs]
    assert (tmp_path / "merged" / "results.csv").read_bytes() == (run / "results.csv").read_bytes()
    assert (tmp_path / "merged" / "success_vs_w.png").read_bytes().startswith(b"\x89PNG")
    ours, theirs = read_committed(tmp_path / "merged" / "episodes.jsonl"), read_committed(run / "episodes.jsonl")
    assert ours.keys() == theirs.keys()  # the same episodes: checkpoints, settings, w, slots and seeds
    assert all(ours[k]["success"] == theirs[k]["success"] for k in ours)
    assert (tmp_path / "merged" / "config.json").read_text() == (shard_dirs[0] / "config.json").read_text()


def test_merge_refuses_shards_that_would_not_give_the_whole_plan(checkpoints, shard_dirs, evaluated, tmp_path):
    policy, base = checkpoints
    s0, s1 = shard_dirs
    # Shards of other plans cost no rollout here: their shard 5 of 6 holds none of the 4 slots.
    other_w = tmp_path / "other_w"
    assert _cli(policy, "--baseline", base, "--shard", 5, "--num-shards", 6, "--out", other_w, *OVERRIDES, "--cfg-scales", "1,3").exit_code == 0
    other_split = tmp_path / "other_split"
    assert _cli(policy, "--baseline", base, "--shard", 5, "--num-shards", 6, "--out", other_split, *OVERRIDES).exit_code == 0
    incomplete = tmp_path / "incomplete"
    shutil.copytree(s1, incomplete)
    log = (incomplete / "episodes.jsonl").read_text().splitlines(keepends=True)
    unfinished = [line for line in log if '"split": "validation"' in line and '"cfg_scale": 2.0' in line]
    assert len(unfinished) == 1
    (incomplete / "episodes.jsonl").write_text("".join(line for line in log if line not in unfinished))
    _, run, _ = evaluated

    cases = [
        ([s0], "shard 1 of 2 is missing"),
        ([s0, s0, s1], "shard 0 of 2 is given twice"),
        ([s0, s1, other_w], "are shards of different evaluations (their cfg_scales differ: [1.0, 2.0] and [1.0, 3.0])"),
        ([s0, s1, other_split], "is one of 6 shards"),
        ([s0, incomplete], f"shard 1 ('{incomplete}') lacks 1 of 5 episodes (w=2 validation reach task 1 init 5 repeat 0)"),
        ([s0, run], "is not an evaluation shard (no shard.json)"),
    ]
    for dirs, message in cases:
        line = _one_error_line(_cli("--merge", *dirs, "--out", tmp_path / "merged"))
        assert message in line, (dirs, line)
    assert not (tmp_path / "merged").exists()
    assert "drop --cfg-scales" in _one_error_line(_cli("--merge", s0, s1, "--out", tmp_path / "merged", "--cfg-scales", "1"))
    # A shard resumes only its own directory: another shard's episodes there stay untouched.
    before = (s1 / "episodes.jsonl").read_bytes()
    line = _one_error_line(_cli(policy, "--baseline", base, "--shard", 0, "--num-shards", 2, "--out", s1, *OVERRIDES))
    assert "holds shard 1 of 2" in line and (s1 / "episodes.jsonl").read_bytes() == before


HOLD_LOCK = """
import sys
from pathlib import Path
from cfgrl.evaluate.ledger import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_evaluate_into_a_held_run_directory_names_the_holder(checkpoints, shard_dirs, tmp_path):
    policy, _ = checkpoints
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _one_error_line(_cli(policy, "--out", run, *OVERRIDES))
        assert f"is in use by another evaluate (pid {holder.pid})" in line
        assert _one_error_line(_cli("--merge", *shard_dirs, "--out", run)) == line
        assert [p.name for p in run.iterdir()] == ["evaluate.lock"]  # nothing written beside the holder's lock
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _cli("--merge", *shard_dirs, "--out", run).exit_code == 0  # free again once the holder is gone
