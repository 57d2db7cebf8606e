"""Runs through the real command line: kill-and-resume equals an uninterrupted run; 2-process gloo
DDP (torchrun) equals one process on the same global batch; checkpoint layout and pointers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import run_train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
COMMON = ["-o", "train.batch_size=8", "-o", "train.lr=3e-3", "-o", "train.warmup_steps=2", "-o", "train.log_every=5"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cfgrl.cli", "train", *args]


def _weights(policy_dir):
    return load_file(str(policy_dir / "model.safetensors"))


def _assert_same_weights(a, b, atol):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)


def test_kill_and_resume_ends_with_the_weights_of_an_uninterrupted_run(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    settings = ["train.steps=20", "train.save_every=4", "train.ema_decay=0.9", "train.redraw_dropout=true"]
    reference = run_train(tmp_path / "ref", [store], labels, *settings)

    run = tmp_path / "run"
    args = _cli(str(store), "--labels", str(labels), "--out", str(run), *COMMON, *sum((["-o", s] for s in settings), []))
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_8").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = int(os.readlink(run / "last").rsplit("_", 1)[1])
    assert 4 <= killed_at < 20 and not (run / "policy").exists()  # "last" may still name the previous one

    done = subprocess.run(_cli(str(store), "--labels", str(labels), "--out", str(run), "--resume"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming {run / 'checkpoints' / f'step_{killed_at}'}" in done.stderr + done.stdout
    _assert_same_weights(run / "checkpoints" / "step_20", reference.resolve().parent, atol=1e-6)
    _assert_same_weights(run / "policy", reference, atol=1e-6)  # the EMA weights too
    assert (run / "policy").resolve() == (run / "checkpoints" / "step_20" / "ema_policy").resolve()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == [5, 10, 15, 20]  # none twice after the resume
    assert not list((run / "checkpoints").glob(".*"))  # what the kill left is gone


def test_checkpoint_layout_is_pickle_free_and_loadable(small_run_inputs, tmp_path):
    from cfgrl.policy import PI0Policy

    store, labels = small_run_inputs
    run_train(tmp_path / "run", [store], labels, "train.steps=4", "train.save_every=2")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_2", "step_4"]
    last = (tmp_path / "run" / "last").resolve()
    assert last.name == "step_4" and (tmp_path / "run" / "policy").resolve() == last
    state = sorted(p.name for p in (last / "training_state").iterdir())
    assert state == ["config.json", "optimizer.json", "optimizer.safetensors", "rng.json", "rng.safetensors",
                     "scheduler.json", "trainer.json"]
    files = [p for p in last.rglob("*") if p.is_file()]
    assert all(p.suffix in (".json", ".safetensors") for p in files), files  # nothing pickled
    trainer = json.loads((last / "training_state" / "trainer.json").read_text())
    assert trainer["schema"] == "cfgrl.train_checkpoint" and trainer["step"] == 4
    assert PI0Policy.from_pretrained(last).config.chunk_size == 50


def test_old_checkpoints_are_deleted_after_each_save_except_the_kept_ones(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    run_train(tmp_path / "run", [store], labels, "train.steps=7", "train.save_every=1", "train.keep_every=3")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_3", "step_6", "step_7"]
    assert (tmp_path / "run" / "policy").resolve().name == "step_7"


def test_pruning_never_deletes_a_pointed_at_evaluated_named_or_unfinished_checkpoint(tmp_path):
    from cfgrl.train.checkpoint import point, prune

    run = tmp_path / "runs" / "base"
    ckpts = run / "checkpoints"
    for step in range(1, 9):
        (ckpts / f"step_{step}" / "ema_policy").mkdir(parents=True)
    (ckpts / ".tmp-step_9-0a1b2c3d").mkdir()  # a save in progress
    (ckpts / ".deleting-step_0-0a1b2c3d").mkdir()  # a deletion a kill interrupted
    point(run / "last", ckpts / "step_8")
    point(run / "policy", ckpts / "step_1" / "ema_policy")
    (ckpts / "step_2" / "ema_policy" / "eval" / "builtin-reach").mkdir(parents=True)  # `cfgrl evaluate RUN/policy`
    record = tmp_path / "runs" / "rounds" / "round_001" / "round.json"  # a rounds tree started from this run
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"round": 1, "policy_in": str(ckpts / "step_3"), "best_cfg_scale": 2.0}))
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "runs" / "notes" / "round.json").write_text("[not a record")
    assert prune(run, keep_last=2, keep_every=5) == ["step_4", "step_6"]
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp-step_9-0a1b2c3d", "step_1", "step_2", "step_3", "step_5",
                                                       "step_7", "step_8"]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    settings = ["-o", "train.steps=6", "-o", "train.grad_accum=2"]
    single = tmp_path / "single"
    run_train(single, [store], labels, "train.steps=6", "train.grad_accum=2")  # the same settings as COMMON
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cfgrl.cli",
                "train", str(store), "--labels", str(labels), "--out", str(ddp), *COMMON, *settings]
    two = subprocess.run(torchrun, env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "global batch 8 = 2 process(es) x 2 micro-step(s) x 2" in two.stderr + two.stdout
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (single, ddp)]
    assert len(losses[0]) == len(losses[1]) == 3
    for a, b in zip(*losses):  # the same samples, noise and weights at every step
        assert abs(a - b) <= 1e-6 * abs(a)
    # Adam divides by sqrt(v): on weights whose gradients are ~0, a different summation order of the
    # all-reduce moves them by up to ~1e-4 after 6 steps of lr 3e-3 (a full step is 3e-3)
    _assert_same_weights(single / "policy", ddp / "policy", atol=2e-4)
