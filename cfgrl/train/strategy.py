"""How a run spreads over its processes: DDP, or FSDP2 (``torch.distributed.fsdp.fully_shard``).

``train.strategy``:
- ``ddp``: every process holds the whole model, its gradients and AdamW state; gradients are averaged.
- ``fsdp``: parameters, gradients and AdamW state are sharded over the processes (DTensors, dim 0).
  Units, gathered one at a time around their forward and backward: each prefix/expert layer pair
  (``backbone.LayerPair``), each SigLIP layer, the token embeddings, then the rest (the root). The
  sharded parameters stay fp32 (the master weights); with ``train.param_dtype: bf16`` each unit is
  gathered in bf16 and computes in bf16, and gradients are reduced in fp32. Needs a process group:
  launch with ``torchrun`` (``--nproc_per_node 1`` is a valid FSDP run).
- ``auto``: FSDP above ``AUTO_FSDP_PARAMETERS`` with more than one process, DDP otherwise.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cfgrl.errors import CfgrlError
from cfgrl.train.setup import Processes

STRATEGIES = ("ddp", "fsdp", "auto")
AUTO_FSDP_PARAMETERS = 1e9


def check_strategy(name: str, procs: Processes) -> None:
    """One line for a strategy that cannot run here, before anything is loaded or written."""
    if name not in STRATEGIES:
        raise CfgrlError(f"unknown train.strategy {name!r}; accepted: {', '.join(STRATEGIES)}")
    if name == "fsdp" and not dist.is_initialized():
        raise CfgrlError("train.strategy=fsdp shards over a process group, and this run has none: launch it with torchrun "
                         "(torchrun --nproc_per_node N -m cfgrl.cli train ...; N = 1 is fine)")


def may_shard(name: str, procs: Processes) -> bool:
    """Whether the run may end up under FSDP (its weights are then loaded in fp32: the sharded masters)."""
    return name == "fsdp" or (name == "auto" and procs.world > 1)


def resolve(name: str, policy: nn.Module, procs: Processes) -> str:
    """``ddp`` or ``fsdp`` for this run (``auto`` decided by the parameter count and the processes)."""
    if name != "auto":
        return name
    large = sum(p.numel() for p in policy.parameters()) > AUTO_FSDP_PARAMETERS
    return "fsdp" if large and procs.world > 1 else "ddp"


def wrap(policy: nn.Module, strategy: str, procs: Processes, compute_dtype: torch.dtype) -> nn.Module:
    """The module the training loop calls: ``policy`` itself, DDP around it, or ``policy`` sharded in place."""
    if strategy == "ddp":
        # unused parameters: the condition's classes absent from a batch, frozen towers
        return DistributedDataParallel(policy, find_unused_parameters=True) if procs.world > 1 else policy
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(procs.device.type, (procs.world,))
    units = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    transformer = policy.model.transformer
    for pair in transformer.pairs:
        fully_shard([pair, *pair.layers], mesh=mesh, mp_policy=units)
    for layer in transformer.vision.encoder.layers:
        fully_shard(layer, mesh=mesh, mp_policy=units)
    fully_shard(transformer.prefix_lm.embed_tokens, mesh=mesh, mp_policy=units)
    # the root takes the raw batch: its inputs (states, actions) are never cast to the compute dtype
    root = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    fully_shard(policy, mesh=mesh, mp_policy=root)
    return policy


def accumulating(model: nn.Module, strategy: str, procs: Processes, last: bool):
    """The context of one micro-step: gradients are reduced across processes on the last micro-step only."""
    if procs.world == 1 or last:
        if strategy == "fsdp":
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if strategy == "fsdp":
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()


def is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def gather(named: dict[str, torch.Tensor], procs: Processes) -> dict[str, torch.Tensor]:
    """Full CPU copies of ``named`` on rank 0 ({} elsewhere), gathered one tensor at a time (collective:
    every rank calls it), so no rank ever holds more than one full tensor beyond its shards."""
    out = {}
    for name, value in named.items():
        full = value.full_tensor() if is_sharded(value) else value
        if procs.is_main:
            out[name] = full.detach().cpu()
    return out


def scalar(value: torch.Tensor) -> float:
    return float(value.full_tensor() if is_sharded(value) else value)


def like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``full`` placed as ``target`` is: this rank's shard when ``target`` is sharded (no communication:
    every rank holds ``full``), else ``full`` on its device."""
    if not is_sharded(target):
        return full.to(target.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(target.device), target.device_mesh, target.placements, src_data_rank=None)
