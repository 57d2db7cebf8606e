"""What the trainer reports: loss overall and by label, label shares, dropout hits, lr, grad norm,
throughput and the share of time spent waiting for data. Sinks: a tqdm bar on the console,
TensorBoard, ``RUN_DIR/metrics.jsonl`` (one JSON object per log step and per epoch) and wandb when
``train.wandb`` is on. Only rank 0 writes; the sums are reduced over ranks first."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.train.rundir import METRICS, truncate_metrics

# One slot per accumulated quantity, so a single all_reduce moves them all.
SLOTS = ["samples", "loss_sum", "conditioned", "dropout_hits", "wait_s", "busy_s"] + [
    f"{kind}_{label.key}" for label in Label for kind in ("count", "loss_sum")
]


class Meter:
    """Sums since the last report (per rank); ``reduce`` sums them over ranks."""

    def __init__(self) -> None:
        self.values = torch.zeros(len(SLOTS), dtype=torch.float64)

    def add(self, name: str, value: float) -> None:
        self.values[SLOTS.index(name)] += float(value)

    def add_losses(self, losses: torch.Tensor, o: torch.Tensor) -> None:
        losses, o = losses.detach().double().cpu(), o.cpu()
        self.add("samples", len(losses))
        self.add("loss_sum", losses.sum())
        for label in Label:
            mask = o == label
            self.add(f"count_{label.key}", mask.sum())
            self.add(f"loss_sum_{label.key}", losses[mask].sum())

    def reduce(self) -> dict[str, float]:
        values = self.values.clone()
        if dist.is_initialized():
            values = values.float() if dist.get_backend() == "nccl" else values
            values = values.to("cuda") if dist.get_backend() == "nccl" else values
            dist.all_reduce(values)
            values = values.cpu().double()
        self.values.zero_()
        return dict(zip(SLOTS, values.tolist()))


def summarise(sums: dict[str, float], world: int) -> dict[str, float]:
    """Means and shares from reduced sums (time sums are per rank, so divided by the world size)."""
    n = max(sums["samples"], 1.0)
    wall = (sums["wait_s"] + sums["busy_s"]) / world
    out = {"loss": sums["loss_sum"] / n, "dropout_hit_rate": sums["dropout_hits"] / max(sums["conditioned"], 1.0),
           "samples_per_s": sums["samples"] / max(wall, 1e-9),
           "data_wait_share": sums["wait_s"] / max(sums["wait_s"] + sums["busy_s"], 1e-9)}
    for name in (label.key for label in Label):
        count = sums[f"count_{name}"]
        out[f"share_{name}"] = count / n
        out[f"loss_{name}"] = sums[f"loss_sum_{name}"] / count if count else float("nan")
    return out


def require_wandb() -> None:
    """Refuse train.wandb without wandb before the run writes anything."""
    if importlib.util.find_spec("wandb") is None:
        raise CfgrlError("train.wandb is true but wandb is not installed (pip install wandb, or set train.wandb=false)")


class Logger:
    """``start_step``: the step the run starts or resumes from. What a killed run logged after it is
    dropped (``metrics.jsonl`` truncated, TensorBoard told to purge it), so no step appears twice."""

    def __init__(self, run_dir: Path, enabled: bool, use_wandb: bool, config: dict, start_step: int):
        self.enabled = enabled
        self.tb = self.wandb = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        truncate_metrics(run_dir, start_step)
        self.jsonl = open(run_dir / METRICS, "a")
        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if use_wandb:
            import wandb

            self.wandb = wandb.init(dir=str(run_dir), config=config, resume="allow")

    def log(self, kind: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": time.time(), **metrics}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tb.add_scalar(f"{kind}/{name}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
            if self.wandb is not None:
                self.wandb.finish()
