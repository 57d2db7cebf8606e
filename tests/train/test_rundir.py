"""The run directory: one train at a time, what a killed run left removed, a log without duplicate steps."""

import fcntl
import json
import os
import shutil

from typer.testing import CliRunner

from cfgrl.cli import app
from train_helpers import initial_policy, run_train

runner = CliRunner()


def _train(*args: str):
    result = runner.invoke(app, ["train", "-o", "train.steps=2", "-o", "train.batch_size=8", *args])  # args' -o win
    return result.exit_code, [line for line in result.output.splitlines() if line.startswith("error:")]


def _steps(run, kind="train"):
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_a_second_train_into_a_run_directory_in_use_is_refused_naming_the_holder(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    run = tmp_path / "run"
    run_train(run, [store], labels, "train.steps=2")
    (run / "checkpoints" / ".tmp-step_4-0a1b2c3d").mkdir()  # the holder's save in progress
    with open(run / "train.lock", "r+") as held:  # a train in progress holds it, with its pid inside
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
        for extra in (["--resume"], []):
            code, lines = _train(str(store), "--labels", str(labels), "--out", str(run), *extra)
            assert code == 2 and len(lines) == 1, lines
            assert f"run directory '{run}' is being written by another train (pid 4242)" in lines[0]
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # nothing written
        assert (run / "checkpoints" / ".tmp-step_4-0a1b2c3d").is_dir()  # a live writer's files are not leftovers
    assert _train(str(store), "--labels", str(labels), "--out", str(run), "--resume")[0] == 0  # released: it runs


def test_resume_removes_a_killed_runs_leftovers_and_logs_each_step_once(small_run_inputs, tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from cfgrl.train.checkpoint import point

    store, labels = small_run_inputs
    run = tmp_path / "run"
    settings = ["train.steps=6", "train.save_every=3", "train.log_every=1", "train.ema_decay=0.9"]
    run_train(run, [store], labels, *settings)
    # What a SIGKILL during the save of step 6 leaves: every step logged, 'last' still at step 3, the
    # unfinished checkpoint and its staging directory, a pointer being swapped, an EMA export, a cut line.
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "step_6")
    (run / "policy").unlink()
    point(run / "last", ckpts / "step_3")
    leftovers = [ckpts / ".tmp-step_6-0a1b2c3d", ckpts / "..tmp-step_6-0a1b2c3d.x1y2", ckpts / "step_3" / ".ema_policy-77",
                 run / "cache" / ".building-0123-0a1b2c3d"]
    for path in leftovers:
        (path / "training_state").mkdir(parents=True)
    os.symlink("checkpoints/step_3", run / ".tmp-last-0a1b2c3d")
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"kind": "train", "st')

    run_train(run, [store], labels, *settings, resume=True)
    assert not any(p.exists() for p in leftovers) and not (run / ".tmp-last-0a1b2c3d").is_symlink()
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_3", "step_6"]
    assert sorted(p.name for p in (ckpts / "step_3").iterdir()) == ["config.json", "model.safetensors", "stats.json",
                                                                   "tokenizer.json", "training_state"]
    assert _steps(run) == [1, 2, 3, 4, 5, 6]  # the killed run's steps 4-6 dropped, then logged again
    # TensorBoard: the resumed run's event file starts by purging the killed run's steps from 4 on.
    starts = [event.step for path in (run / "tensorboard").iterdir() for event in EventFileLoader(str(path)).Load()
              if event.HasField("session_log")]
    assert sorted(starts) == [1, 4]  # each run's first step: a fresh one purges nothing older either


def test_out_naming_a_file_is_one_line_and_nothing_is_written(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    (tmp_path / "notes.txt").write_text("mine")
    for out, where in ((tmp_path / "notes.txt", "is a file"), (tmp_path / "notes.txt" / "run", "lies under")):
        code, lines = _train(str(store), "--labels", str(labels), "--out", str(out))
        assert code == 2 and len(lines) == 1 and f"--out '{out}' {where}" in lines[0], lines
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_every_input_is_checked_before_the_run_directory_is_created(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "-o", "train.batch_size=4096")
    assert code == 2 and len(lines) == 1 and "fewer than one batch" in lines[0]
    assert not (tmp_path / "run").exists()
    policy = initial_policy([store]).save_pretrained(tmp_path / "policy")
    weights = policy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "--policy", str(policy))
    assert code == 2 and len(lines) == 1 and f"{weights} is truncated or corrupt" in lines[0]
    assert not (tmp_path / "run").exists()
