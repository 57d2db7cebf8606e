"""The three training objectives, and each window's condition per epoch.

* ``cfgrl`` (default): plain flow matching over every labelled window, ONE forward per batch, each
  sample under its own label: ``L = mean_i ||v(x_t, t | o_i) - (eps - a)||^2`` with o_i in {1, 0, ∅}.
  No advantage weight, no second forward: the label only decides which condition is injected.
* ``filtered_bc``: the same loss, only on the positive windows, all unconditional.
* ``weighted``: the advantage-weighted two-branch baseline the project migrates away from,
  ``L = mean_i w_i L_i(o=1) + alpha mean_i L_i(∅)`` with ``w_i = 1`` on the positive windows, else 0.
  Both branches run as one doubled batch, so a DDP step still has a single forward.

The positives are one set for all three (``positives``): the windows whose raw label (before
condition dropout) is o = 1. The label index already applied the threshold or quantile and
``cfgrl.zero_variance_groups``, so no objective re-derives them from advantages: a comparison of
objectives is a comparison of losses on the same data, never of two labelings.

Noise and flow time are drawn per sample from a generator seeded by (seed, step, window): a
window gets the same draw however the batch is split over processes or resumed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cfgrl.errors import CfgrlError
from cfgrl.label import condition_dropout
from cfgrl.optimality import Label, from_stored
from cfgrl.policy.model import flow_time


@dataclass
class EpochLabels:
    """Per window: its condition o, whether dropout turned it into ∅, and the weighted baseline's w."""

    o: np.ndarray  # int64 Label codes
    dropout_hit: np.ndarray  # bool
    conditioned: np.ndarray  # bool: the raw label was 1 or 0
    w_pos: np.ndarray  # float32, objective=weighted only (else ones)


# Objectives that feed every window unconditioned: the result is a plain policy, the same at every w.
UNCONDITIONED_OBJECTIVES = ("filtered_bc",)
# Objectives that train on the positives apart from the rest: without a positive they have nothing to learn.
NEEDS_POSITIVES = ("filtered_bc", "weighted")


def positives(windows: pd.DataFrame) -> np.ndarray:
    """THE positive windows of a label index (a bool mask): raw label o = 1. CFGRL conditions them on
    o = 1, filtered BC trains on them alone, the weighted loss gives them weight 1 and every other window 0."""
    return windows["raw_label"].eq(Label.OPTIMAL).fillna(False).to_numpy(bool)


def feeds_a_condition(objective: str, windows: pd.DataFrame) -> bool:
    """Whether a run conditions any window: not under an unconditioned objective, and not on an index
    without any raw label (label_source none: plain behaviour cloning). Otherwise every sample is ∅,
    and the trained policy is the plain one (``condition_trained`` stays False)."""
    return objective not in UNCONDITIONED_OBJECTIVES and bool(windows["raw_label"].notna().any())


def check_positives(objective: str, windows: pd.DataFrame, version: str) -> None:
    """Refuse, before training, an objective that needs positives on an index that has none."""
    if objective in NEEDS_POSITIVES and not positives(windows).any():
        raise CfgrlError(f"objective {objective}: label index {version} has no positive window (raw label o=1) among its "
                         f"{len(windows)}; relabel with a lower cfgrl.label_threshold or cfgrl.label_quantile, or use objective cfgrl")


def training_rows(objective: str, windows: pd.DataFrame, optimal_repeat: int = 1) -> np.ndarray | None:
    """The windows an objective trains on, one entry per visit in an epoch (None = all, once each).

    ``optimal_repeat`` N > 1 (cfgrl only) lists every raw-o=1 window N times: the o=1 branch then gets
    about N times its labelled share of each batch, closer to the updates filtered BC spends on those
    windows. Each repeat keeps its window's label, dropout included."""
    if objective != "filtered_bc" and optimal_repeat == 1:
        return None
    optimal = np.flatnonzero(positives(windows))
    if objective == "filtered_bc":
        return optimal
    return np.concatenate([np.arange(len(windows))] + [optimal] * (optimal_repeat - 1))


def epoch_labels(objective: str, windows: pd.DataFrame, manifest: dict, redraw: bool, seed: int, epoch: int) -> EpochLabels:
    raw = windows["raw_label"]
    conditioned = raw.notna().to_numpy()
    ones = np.ones(len(windows), np.float32)
    if objective == "filtered_bc":
        return EpochLabels(np.full(len(windows), int(Label.NULL)), np.zeros(len(windows), bool), conditioned, ones)
    if objective == "weighted":
        w_pos = positives(windows).astype(np.float32)
        return EpochLabels(np.full(len(windows), int(Label.OPTIMAL)), np.zeros(len(windows), bool), conditioned, w_pos)
    if redraw:
        p = manifest["settings"]["dropout_prob"]
        labels, hit = condition_dropout(raw, p, np.random.default_rng([seed, epoch]))
        return EpochLabels(from_stored(labels), hit, conditioned, ones)
    return EpochLabels(from_stored(windows["label"]), windows["dropout_hit"].to_numpy(bool), conditioned, ones)


def _seed(*parts: int) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def flow_draws(windows: np.ndarray, step: int, seed: int, shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (B, *shape) and flow time (B,) keyed by (seed, step, window index); global RNG untouched.
    Time follows PI0's training distribution (``cfgrl.policy.model.flow_time``) from each window's
    own uniform draw."""
    generator = torch.Generator()
    noise, uniform = [], []
    for w in np.asarray(windows).tolist():
        generator.manual_seed(_seed(seed, step, w))
        noise.append(torch.randn(shape, generator=generator))
        uniform.append(torch.rand((), generator=generator))
    time = flow_time(torch.stack(uniform))
    return torch.stack(noise).to(device, non_blocking=True), time.to(device, non_blocking=True)


def objective_loss(objective: str, model: torch.nn.Module, batch: dict, w_pos: torch.Tensor, alpha: float,
                   noise: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to minimise, per-sample losses, their conditions) for one micro-batch."""
    if objective != "weighted":
        losses = model(batch, noise, time)  # ONE forward, per-sample o (mixed batch)
        return losses.mean(), losses, batch["o"]
    n = len(w_pos)
    doubled = {
        "images": {cam: torch.cat([img, img]) for cam, img in batch["images"].items()},
        "state": torch.cat([batch["state"]] * 2),
        "actions": torch.cat([batch["actions"]] * 2),
        "action_is_pad": torch.cat([batch["action_is_pad"]] * 2),
        "prompt": batch["prompt"] * 2,
        "o": torch.cat([torch.full_like(batch["o"], int(Label.OPTIMAL)), torch.full_like(batch["o"], int(Label.NULL))]),
    }
    losses = model(doubled, torch.cat([noise, noise]), torch.cat([time, time]))
    positive, unconditional = losses[:n], losses[n:]
    loss = (w_pos * positive).mean() + alpha * unconditional.mean()
    return loss, losses, doubled["o"]
