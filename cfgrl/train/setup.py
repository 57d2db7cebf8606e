"""Everything a run needs before its first step: processes, the policy and its statistics.

Distributed: ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them the run is one process.
NCCL on CUDA, gloo on CPU. Only rank 0 writes (logs, cache, checkpoints).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from cfgrl.config import Config, camera_renames
from cfgrl.errors import CfgrlError
from cfgrl.policy import PI0Config, PI0Policy
from cfgrl.store import Store
from cfgrl.train.stats import mismatch_report, store_stats


@dataclass
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_processes() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if (world > 1 or "RANK" in os.environ) and not dist.is_initialized():  # torchrun gives a group even to one process
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(int(os.environ.get("RANK", "0")), world, device)


def close_processes(procs: Processes) -> None:
    if procs.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def common_layout(stores: list[Store]):
    layout = stores[0].layout
    for store in stores[1:]:
        if store.layout != layout:
            raise CfgrlError(f"store '{store.path}' holds {store.layout} but '{stores[0].path}' holds {layout}; train on stores of one layout")
    return layout


def load_policy_dir(path: Path, tokenizer: str | None, dtype: torch.dtype = torch.float32, **condition: Any) -> PI0Policy:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CfgrlError(f"--policy '{path}' is not a policy checkpoint (no config.json); give a directory written by "
                         "cfgrl (save_pretrained / train), a lerobot pi0 / pi05 or an openpi PyTorch checkpoint")
    return PI0Policy.from_pretrained(path, tokenizer=tokenizer, dtype=dtype, **condition)


def _unrecorded_dims(source: Path, layout) -> dict[str, int]:
    """The stores' state/action dims for an openpi checkpoint without norm stats, the only place openpi
    records the robot's dims; every other checkpoint records its own (checked against the stores)."""
    from cfgrl.policy.checkpoint import carries_stats
    from cfgrl.policy.layout import layout_of, read_config

    if (source / "config.json").is_file() and layout_of(read_config(source)) == "openpi" and not carries_stats(source):
        return {"state_dim": layout.state_dim, "action_dim": layout.action_dim}
    return {}


def build_policy(cfg: Config, stores: list[Store], source: Path | None, say: Callable[[str], None],
                 dtype: torch.dtype = torch.float32) -> PI0Policy:
    """A policy from ``source`` (a checkpoint) or a fresh ``policy.preset`` shaped by the stores, its weights in ``dtype``."""
    layout = common_layout(stores)
    if source is None:
        pcfg = PI0Config.fresh(
            cfg.policy, use_prefix_dropout=cfg.cfgrl.use_prefix_dropout,
            image_size=layout.image_shape[0], camera_names=tuple(layout.camera_names), state_dim=layout.state_dim,
            action_dim=layout.action_dim,
        )
        policy = PI0Policy(pcfg, stats=store_stats(stores, cfg.policy.normalization), tokenizer=cfg.policy.tokenizer)
        policy.cast_weights(dtype)
        say(f"fresh '{cfg.policy.preset}' policy, {sum(p.numel() for p in policy.parameters()) / 1e6:.1f} M parameters; "
            f"{cfg.policy.normalization} normalisation stats computed from the stores")
        return policy

    # The configured condition applies to a checkpoint too (a BC base gets the mode being trained).
    sizes = {key: getattr(cfg.policy, key) for key in ("chunk_size", "max_token_len") if getattr(cfg.policy, key) is not None}
    policy = load_policy_dir(source, cfg.policy.tokenizer, dtype, condition_mode=cfg.policy.condition_mode,
                             use_prefix_dropout=cfg.cfgrl.use_prefix_dropout, **sizes, **_unrecorded_dims(source, layout))
    for note in policy.load_report:
        say(f"policy '{source}': {note}")
    policy.rename_cameras(camera_renames(cfg.policy.camera_map))
    pcfg = policy.config
    if (pcfg.state_dim, pcfg.action_dim) != (layout.state_dim, layout.action_dim):
        raise CfgrlError(f"policy '{source}' uses state/action dims {pcfg.state_dim}/{pcfg.action_dim}, the stores hold "
                         f"{layout.state_dim}/{layout.action_dim}")
    missing = sorted(set(layout.camera_names) - set(pcfg.camera_names))
    if missing:
        raise CfgrlError(f"policy '{source}' has no camera {', '.join(missing)} (it uses {', '.join(pcfg.camera_names)}); "
                         "train on stores with its cameras")
    # Recomputed stats keep the checkpoint's kind: its weights learnt in that normalised space.
    kind = policy.stats.kind if policy.stats is not None else cfg.policy.normalization
    computed = store_stats(stores, kind)
    if cfg.train.stats == "store" or policy.stats is None:
        policy.set_stats(computed)
        why = "train.stats=store" if cfg.train.stats == "store" else "the checkpoint carries none"
        say(f"{kind} normalisation stats computed from the stores ({why})")
    else:
        for line in mismatch_report(policy.stats, computed):
            say(f"warning: normalisation stats differ, kept the checkpoint's (train.stats=store recomputes): {line}")
    return policy
