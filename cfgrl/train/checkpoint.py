"""Training checkpoints: atomic, pickle-free, with a ``last`` pointer.

``RUN_DIR/checkpoints/step_N/`` is a policy directory (``PI0Policy.from_pretrained`` loads it) plus::

    training_state/trainer.json          schema, step, epoch, batch position in the epoch, world size
    training_state/config.json           the resolved configuration of the run
    training_state/optimizer.safetensors AdamW tensors, keyed "<param index>.<name>"
    training_state/optimizer.json        AdamW param groups and non-tensor state
    training_state/scheduler.json        the lr scheduler's state
    training_state/rng.safetensors       torch CPU (and CUDA) generator states of rank 0
    training_state/rng.json              numpy and python generator states of rank 0
    training_state/ema.safetensors       EMA weights (only with train.ema_decay)
    training_state/master_weights.safetensors  fp32 masters of the bf16 trainable weights (train.param_dtype: bf16)
    adapter/                             a LoRA run's adapters and condition (``cfgrl.policy.lora``): the policy
                                         beside it has them merged; resuming rebuilds base + adapters from here

It is written to a temporary directory and renamed into place, then ``RUN_DIR/last`` (a relative
symlink) is swapped to it, so a kill at any moment leaves the previous checkpoint intact (and hidden
leftovers, which the next run removes: ``cfgrl.train.rundir``). Then the
checkpoints ``train.keep_last`` / ``train.keep_every`` do not keep are deleted (``prune``): a pi0
checkpoint with its optimiser state is ~40 GB.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file

from cfgrl import atomic
from cfgrl.errors import CfgrlError
from cfgrl.policy.checkpoint import read_safetensors, write_policy_files
from cfgrl.train.strategy import is_sharded, like
from cfgrl.schemas import TRAIN_CHECKPOINT

STATE_DIR = "training_state"
STEP_DIR = re.compile(r"step_(\d+)")  # a finished checkpoint; temporary ones start with "."
DELETING = ".deleting-"


def _tensors_and_json(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser state's whole tensors (keyed "<param index>.<name>") and its other values; sharded
    tensors (FSDP) are left to ``save_optimizer_shard``."""
    tensors, plain = {}, {}
    for pid, entries in state.items():
        for name, value in entries.items():
            if is_sharded(value):
                continue
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[name] = value
    return tensors, plain


NAMED_TENSORS = ("ema", "master_weights")  # training_state/<name>.safetensors, each written when the run has it
SHARD = "optimizer-shard{rank}-of-{world}.safetensors"


def staging(run_dir: Path, step: int) -> Path:
    """Where step ``step``'s checkpoint is written before it is renamed into place (hidden: a kill's
    leftover is removed by the next run). One name for every rank: FSDP ranks write their shards there."""
    return run_dir / "checkpoints" / f"{atomic.TEMPORARY}step_{step}"


def begin_checkpoint(run_dir: Path, step: int) -> Path:
    """Rank 0: an empty staging directory for step ``step`` (with its ``training_state/``)."""
    tmp = staging(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / STATE_DIR).mkdir(parents=True)
    return tmp


def save_optimizer_shard(tmp: Path, optimizer: torch.optim.Optimizer, rank: int, world: int, stamp: dict[str, str]) -> None:
    """Every FSDP rank: its shards of the optimiser state (each DTensor's local rows), stamped with the
    run and step they belong to, so shards of another save are recognised."""
    local = {f"{pid}.{name}": value.to_local().detach().cpu().contiguous()
             for pid, entries in optimizer.state_dict()["state"].items() for name, value in entries.items()
             if is_sharded(value)}
    save_file(local, str(tmp / STATE_DIR / SHARD.format(rank=rank, world=world)), metadata={**stamp, "rank": str(rank)})


def save_checkpoint(tmp: Path, run_dir: Path, step: int, policy: Any, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, trainer: dict, config: dict,
                    named: dict[str, dict[str, torch.Tensor]], beside: Callable[[Path], None] | None = None) -> Path:
    """Rank 0: complete the staging directory ``tmp`` (from ``begin_checkpoint``; FSDP shards already in it),
    rename it to ``checkpoints/step_<step>`` and point ``last`` at it. ``weights``: the policy's plain, full
    weights; ``named``: the ``NAMED_TENSORS`` files the run has; ``beside`` writes more (a LoRA adapter)."""
    final = run_dir / "checkpoints" / f"step_{step}"
    try:
        write_policy_files(policy, tmp, weights)
        policy_id = json.loads((tmp / "config.json").read_text())["policy_id"]
        state = tmp / STATE_DIR
        (state / "trainer.json").write_text(json.dumps({**TRAIN_CHECKPOINT.stamp(), **trainer, "step": step, "policy_id": policy_id}, indent=1))
        (state / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        opt = optimizer.state_dict()
        tensors, plain = _tensors_and_json(opt["state"])
        save_file(tensors, str(state / "optimizer.safetensors"), metadata=stamp_of(trainer, step))
        (state / "optimizer.json").write_text(json.dumps({"param_groups": opt["param_groups"], "state": plain}))
        (state / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
        _save_rng(state)
        for name, tensors in named.items():
            assert name in NAMED_TENSORS, name
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(state / f"{name}.safetensors"))
        if beside is not None:
            beside(tmp)
        if final.exists():  # the same step saved again after a resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    point(run_dir / "last", final)
    return final


def stamp_of(trainer: dict, step: int) -> dict[str, str]:
    """What ties a training state's files together: the run and the step."""
    return {"run_id": str(trainer.get("run_id")), "step": str(step)}


def finished_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every finished checkpoint of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), path) for path in root.iterdir() if (m := STEP_DIR.fullmatch(path.name)) and path.is_dir())


def prune(run_dir: Path, keep_last: int, keep_every: int) -> list[str]:
    """Delete the checkpoints that are neither among the ``keep_last`` newest nor a multiple of
    ``keep_every`` (when > 0); return their names. Never deleted, whatever the settings: the one
    ``last`` or ``policy`` points at, one holding an ``eval/`` folder, one a round.json names."""
    root = run_dir / "checkpoints"
    for leftover in root.glob(f"{DELETING}*"):  # a deletion a kill interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    steps = finished_checkpoints(run_dir)
    newest = {step for step, _ in steps[-keep_last:]}
    named = _named_paths(run_dir)
    deleted = []
    for step, path in steps:
        if step in newest or (keep_every > 0 and step % keep_every == 0) or _has_eval(path) or _is_named(path, named):
            continue
        doomed = root / f"{DELETING}{path.name}-{uuid.uuid4().hex[:8]}"
        os.replace(path, doomed)  # gone at once: a kill mid-deletion never leaves half a step_N behind
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(path.name)
    return deleted


def _has_eval(ckpt: Path) -> bool:
    """Evaluation results live in POLICY/eval/ (``cfgrl evaluate``'s default), EMA ones in ema_policy/eval/."""
    return (ckpt / "eval").is_dir() or any(p.is_dir() for p in ckpt.glob("*/eval"))


def _is_named(ckpt: Path, named: list[Path]) -> bool:
    ckpt = ckpt.resolve()
    return any(p == ckpt or ckpt in p.parents for p in named)  # the checkpoint or its ema_policy


def _named_paths(run_dir: Path) -> list[Path]:
    """The pointers ``last`` and ``policy``, and every path a round.json in the run directory's parent
    (down to two levels: ROOT/round_k/round.json beside ROOT/round_k/train, or a rounds tree beside a
    base run) records: a round's starting and trained policies."""
    named = [run_dir / "last", run_dir / "policy"]
    parent = run_dir.resolve().parent
    for record in (*parent.glob("round.json"), *parent.glob("*/round.json"), *parent.glob("*/*/round.json")):
        try:
            fields = json.loads(record.read_text())
        except (OSError, ValueError):
            continue  # unreadable: it names nothing
        if isinstance(fields, dict):
            named += [Path(v) for v in fields.values() if isinstance(v, str)]
    return [p.resolve() for p in named if p.exists()]


def point(link: Path, target: Path) -> None:
    """Atomically (re)point a relative symlink."""
    tmp = link.with_name(f"{atomic.TEMPORARY}{link.name}-{uuid.uuid4().hex[:8]}")  # a kill's leftover: rundir.remove_leftovers
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def _save_rng(state: Path) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    save_file(tensors, str(state / "rng.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    (state / "rng.json").write_text(json.dumps({
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [py_version, list(py_state), py_gauss],
    }))


def _load_rng(state: Path) -> None:
    tensors = read_safetensors(state / "rng.safetensors")
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = json.loads((state / "rng.json").read_text())
    kind, keys, pos, has_gauss, gauss = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = saved["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def resolve_last(run_dir: Path) -> Path:
    last = run_dir / "last"
    if not last.exists():
        raise CfgrlError(f"--resume: '{run_dir}' has no checkpoint yet (no {last}); start without --resume")
    return last.resolve()


def read_trainer_state(ckpt: Path) -> dict:
    path = ckpt / STATE_DIR / "trainer.json"
    if not path.is_file():
        raise CfgrlError(f"'{ckpt}' is not a training checkpoint (no {STATE_DIR}/trainer.json)")
    trainer = _read_json(path, ckpt)
    TRAIN_CHECKPOINT.check(trainer, f"checkpoint '{ckpt}'")
    policy_id = json.loads((ckpt / "config.json").read_text()).get("policy_id") if (ckpt / "config.json").is_file() else None
    if trainer.get("policy_id") not in (None, policy_id):  # checkpoints written before the record have none
        raise CfgrlError(f"'{ckpt}/{STATE_DIR}' is the training state of policy {trainer['policy_id']}, but the checkpoint holds policy "
                         f"{policy_id}: a training state from another checkpoint or run; resume from an intact checkpoint")
    return trainer


def read_config(ckpt: Path) -> dict:
    return _read_json(ckpt / STATE_DIR / "config.json", ckpt)


def _read_json(path: Path, ckpt: Path) -> dict:
    """A JSON object of a checkpoint's training state, or one line saying it is missing or damaged."""
    if not path.is_file():
        raise CfgrlError(f"'{ckpt}' is not a whole training checkpoint (no {path.relative_to(ckpt)}); resume from another checkpoint")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        value = exc
    if not isinstance(value, dict):
        raise CfgrlError(f"'{path}' is damaged (not a JSON object); resume from an earlier checkpoint: point '{ckpt.parent.parent}/last' "
                         f"at another checkpoints/step_N, or start the run again")
    return value


def restore_training_state(ckpt: Path, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                           trainer: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Load optimiser, scheduler and RNG states in place; return the ``NAMED_TENSORS`` files saved (whole).

    Sharded optimiser state (FSDP) is put together from every shard file, one tensor at a time, and each
    rank keeps the rows its own parameters hold now: resuming on another number of processes works."""
    state = ckpt / STATE_DIR
    saved = json.loads((state / "optimizer.json").read_text())
    stamp = stamp_of(trainer, trainer["step"])
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in _read_stamped(state / "optimizer.safetensors", stamp, ckpt).items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, full in _sharded_state(state, stamp, ckpt):
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = like(full, params[int(pid)])
    for pid, entries in saved["state"].items():
        per_param.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
    scheduler.load_state_dict(json.loads((state / "scheduler.json").read_text()))
    _load_rng(state)
    return {name: read_safetensors(state / f"{name}.safetensors") for name in NAMED_TENSORS if (state / f"{name}.safetensors").is_file()}


def _read_stamped(path: Path, stamp: dict[str, str], ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    tensors = read_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        _check_stamp(f.metadata() or {}, stamp, path, ckpt)
    return tensors


def _check_stamp(found: dict[str, str], stamp: dict[str, str], path: Path, ckpt: Path) -> None:
    if "run_id" in found and {k: found.get(k) for k in stamp} != stamp:
        raise CfgrlError(f"'{path}' belongs to run {found.get('run_id')} step {found.get('step')}, not to this checkpoint "
                         f"(run {stamp['run_id']} step {stamp['step']}): '{ckpt}' mixes training states; resume from an intact checkpoint")


def _sharded_state(state: Path, stamp: dict[str, str], ckpt: Path):
    """(key, full tensor) of the sharded optimiser state, each put together from every rank's rows in rank order."""
    from contextlib import ExitStack

    from safetensors import safe_open

    files = sorted(state.glob("optimizer-shard*-of-*.safetensors"))
    if not files:
        return
    world = int(files[0].stem.rsplit("-of-", 1)[1])
    names = {SHARD.format(rank=r, world=world) for r in range(world)}
    if {f.name for f in files} != names:
        raise CfgrlError(f"'{ckpt}' holds optimiser shards {', '.join(f.name for f in files)}, not the {world} of one save; "
                         "resume from an intact checkpoint")
    with ExitStack() as stack:
        shards = [stack.enter_context(safe_open(str(state / SHARD.format(rank=r, world=world)), framework="pt")) for r in range(world)]
        for rank, shard in enumerate(shards):
            _check_stamp(shard.metadata() or {}, stamp, state / SHARD.format(rank=rank, world=world), ckpt)
        for key in sorted(shards[0].keys()):
            yield key, torch.cat([shard.get_tensor(key) for shard in shards], 0)
