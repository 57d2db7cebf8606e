"""AdamW with PI0's warm-up + cosine schedule, and optional EMA weights."""

from __future__ import annotations

import math

import torch

from cfgrl.config import TrainConfig


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

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Write the averaged weights into ``module`` (a copy of the policy, for export)."""
        own = dict(module.named_parameters())
        for name, value in self.shadow.items():
            own[name].copy_(value.to(own[name].dtype))
