"""AdamW with PI0's warm-up + cosine schedule, fp32 master weights for bf16 training, optional EMA weights."""

from __future__ import annotations

import math

import torch

from cfgrl.config import TrainConfig
from cfgrl.errors import CfgrlError


class MasterWeights:
    """fp32 master copies of trainable weights held in bf16 (``train.param_dtype: bf16``).

    The optimiser steps the masters, which live on the weights' device beside them: a bf16 weight
    cannot take an update smaller than half its spacing (1/512 to 1/256 of its size), which a small learning
    rate's steps are, but its master can, and the weight is the master rounded after every step. fp32
    weights are their own masters, so the same three calls serve both dtypes: ``take_grads`` after
    backward, ``optimizer.step()`` on ``params``, ``push`` after.
    """

    def __init__(self, named: dict[str, torch.nn.Parameter]):
        self.weights = named
        # the masters that are not the weights themselves (what a checkpoint keeps beside the bf16 policy)
        self.separate = {name: torch.nn.Parameter(p.detach().float()) for name, p in named.items() if p.dtype != torch.float32}
        self.masters = {name: self.separate.get(name, p) for name, p in named.items()}

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.masters.values())

    def take_grads(self) -> None:
        for name, master in self.separate.items():
            weight = self.weights[name]
            master.grad = weight.grad.float() if weight.grad is not None else None
            weight.grad = None

    @torch.no_grad()
    def push(self) -> None:
        for name, master in self.separate.items():
            self.weights[name].copy_(master)

    @torch.no_grad()
    def load(self, saved: dict[str, torch.Tensor]) -> None:
        """Restore the separate masters from a checkpoint (and round them into the weights)."""
        if set(saved) != set(self.separate):
            raise CfgrlError(f"the checkpoint's master weights ({len(saved)}) do not match this run's bf16 weights ({len(self.separate)})")
        for name, value in saved.items():
            self.separate[name].copy_(value)
        self.push()


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based).

    Linear warm-up to the peak, then cosine decay to ``decay_lr`` at ``decay_steps``, constant after.
    A run shorter than ``decay_steps`` compresses warm-up and decay in proportion (as PI0's
    schedule does), so a short fine-tune still ends at ``decay_lr``."""
    warmup, decay = cfg.warmup_steps, cfg.decay_steps
    if cfg.steps < decay:
        scale = cfg.steps / decay
        warmup, decay = int(warmup * scale), cfg.steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(step - warmup, decay - warmup) / max(1, decay - warmup)
    floor = cfg.decay_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


class EMA:
    """Exponential moving average of the trainable weights, kept in float32."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.params = named_params
        self.shadow = {name: p.detach().float().clone() for name, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)
