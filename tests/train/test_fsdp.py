"""FSDP2 on the CPU with gloo, through torchrun and the real command line: two processes train as one
does, parameters are sharded, kill-and-resume continues exactly (on 2 processes, and on 1), and bad
input is refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cfgrl.errors import CfgrlError
from cfgrl.train import checkpoint as ckpt_io
from train_helpers import run_train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
COMMON = ["train.batch_size=8", "train.lr=3e-3", "train.warmup_steps=2", "train.log_every=1"]


def _train(store, labels, out, *settings: str, processes: int | None = 2, resume: bool = False) -> subprocess.CompletedProcess:
    """``cfgrl train`` under torchrun with ``processes`` (None: a plain single process, no torchrun)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes else [sys.executable]
    args = [*launcher, "-m", "cfgrl.cli", "train", str(store), "--labels", str(labels), "--out", str(out)]
    args += ["--resume", *sum((["-o", s] for s in settings), [])] if resume else sum((["-o", s] for s in [*COMMON, *settings]), [])
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)


def _losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def _close(a, b, name: str, atol: float) -> None:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=key)


def test_two_fsdp_processes_train_as_one_process_does_on_sharded_parameters(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    one = _train(store, labels, tmp_path / "one", "train.steps=20", "train.save_every=20", processes=None)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(store, labels, tmp_path / "two", "train.steps=20", "train.save_every=20", "train.strategy=fsdp")
    assert two.returncode == 0, two.stderr[-2000:]
    line = next(line for line in two.stdout.splitlines() if line.startswith("FSDP over 2 process(es)"))
    sharded, total = (int(w) for w in line.split(": ", 1)[1].split(" parameter")[0].split(" of "))
    assert sharded == total > 0  # every parameter a DTensor
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "two")), torch.tensor(_losses(tmp_path / "one")), rtol=1e-4, atol=1e-6)
    _close(tmp_path / "two" / "policy", tmp_path / "one" / "policy", "model.safetensors", atol=1e-4)

    state = tmp_path / "two" / "checkpoints" / "step_20" / ckpt_io.STATE_DIR
    halves = [load_file(str(state / ckpt_io.SHARD.format(rank=r, world=2))) for r in range(2)]
    whole = load_file(str(tmp_path / "one" / "checkpoints" / "step_20" / ckpt_io.STATE_DIR / "optimizer.safetensors"))
    assert halves[0].keys() == halves[1].keys() and halves[0]
    for key, first in halves[0].items():  # each rank holds its rows only; together, the whole state
        rows = whole[key].shape[0]
        assert (first.shape[0] < rows or rows == 1) and first.shape[0] + halves[1][key].shape[0] == rows, key
    assert not (state / "master_weights.safetensors").exists()  # the fp32 shards are the masters


def test_fsdp_resumes_exactly_on_two_processes_and_on_one(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    settings = ["train.steps=8", "train.save_every=4", "train.ema_decay=0.9", "train.strategy=fsdp"]
    reference = tmp_path / "ref"
    done = _train(store, labels, reference, *settings)
    assert done.returncode == 0, done.stderr[-2000:]
    for processes in (2, 1):
        run = tmp_path / f"on{processes}"
        shutil.copytree(reference, run, symlinks=True)
        # as a kill right after step 4 was saved leaves it
        shutil.rmtree(run / "checkpoints" / "step_8")
        (run / "policy").unlink()
        ckpt_io.point(run / "last", run / "checkpoints" / "step_4")
        resumed = _train(store, labels, run, processes=processes, resume=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        atol = 1e-7 if processes == 2 else 1e-5  # one process sums the gradients in another order
        final, expected = run / "checkpoints" / "step_8", reference / "checkpoints" / "step_8"
        _close(final, expected, "model.safetensors", atol)
        _close(final / "ema_policy", expected / "ema_policy", "model.safetensors", atol)
        if processes == 1:  # the optimiser state put back together from 2 shards, carried on by 1 process
            ours = load_file(str(final / ckpt_io.STATE_DIR / ckpt_io.SHARD.format(rank=0, world=1)))
            halves = [load_file(str(expected / ckpt_io.STATE_DIR / ckpt_io.SHARD.format(rank=r, world=2))) for r in range(2)]
            for key in ours:
                torch.testing.assert_close(ours[key], torch.cat([h[key] for h in halves]), rtol=1e-4, atol=atol, msg=key)


def test_fsdp_bad_input_is_one_line_and_writes_nothing(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    with pytest.raises(CfgrlError, match="train.strategy=fsdp shards over a process group, and this run has none: launch it with torchrun"):
        run_train(tmp_path / "none", [store], labels, "train.strategy=fsdp")
    assert not (tmp_path / "none").exists()

    run = tmp_path / "fsdp"
    assert _train(store, labels, run, "train.steps=2", "train.save_every=2", "train.strategy=fsdp").returncode == 0
    listing = sorted(p.relative_to(run) for p in run.rglob("*"))
    as_ddp = _train(store, labels, run, "train.strategy=ddp", processes=None, resume=True)
    assert as_ddp.returncode == 2 and "runs with train.strategy=fsdp; --resume continues it so" in as_ddp.stderr
    plain = _train(store, labels, run, processes=None, resume=True)
    assert plain.returncode == 2 and "launch it with torchrun" in plain.stderr  # an FSDP run needs its process group
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == listing

    ddp = tmp_path / "ddp"  # the reverse: a DDP run resumed under FSDP
    run_train(ddp, [store], labels, "train.steps=2", "train.save_every=2")
    as_fsdp = _train(store, labels, ddp, "train.strategy=fsdp", processes=1, resume=True)
    assert as_fsdp.returncode != 0 and "runs with train.strategy=auto; --resume continues it so" in as_fsdp.stderr
    other = tmp_path / "other"
    assert _train(store, labels, other, "train.steps=2", "train.save_every=2", "train.strategy=fsdp").returncode == 0
    shard = ckpt_io.STATE_DIR + "/" + ckpt_io.SHARD.format(rank=1, world=2)
    shutil.copy(other / "checkpoints" / "step_2" / shard, run / "checkpoints" / "step_2" / shard)  # a shard of another run
    mixed = _train(store, labels, run, resume=True)
    assert mixed.returncode != 0 and "mixes training states; resume from an intact checkpoint" in mixed.stderr


def test_a_training_state_from_another_checkpoint_is_refused(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    run = tmp_path / "run"
    run_train(run, [store], labels, "train.steps=4", "train.save_every=2")
    steps = run / "checkpoints"
    shutil.rmtree(steps / "step_4" / ckpt_io.STATE_DIR)
    shutil.copytree(steps / "step_2" / ckpt_io.STATE_DIR, steps / "step_4" / ckpt_io.STATE_DIR)  # step 2's state beside step 4's policy
    listing = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(CfgrlError, match="is the training state of policy .* but the checkpoint holds policy .*: a training state from another"):
        run_train(run, [store], labels, resume=True)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == listing
