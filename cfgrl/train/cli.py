"""`cfgrl train`: flow-matching training of a PI0 policy on a label index (CFGRL, or BC with label_source none)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve


def train_command(
    stores: Annotated[list[Path], typer.Argument(help="Store directories the label index was made from, in its order.")],
    labels: Annotated[str, typer.Option("--labels", help="Label version: its directory, STORE@VERSION_OR_NAME, or a store (= the version `cfgrl label` made or reused last).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: checkpoints/step_N/, last -> latest, policy -> final policy.")],
    policy: Annotated[Optional[Path], typer.Option("--policy", help="Start from this policy checkpoint (ours, lerobot or openpi); default: a fresh policy.preset.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its 'last' checkpoint, with its saved configuration.")] = False,
    objective: Annotated[Optional[str], typer.Option("--objective", help="cfgrl | filtered_bc | weighted (sets train.objective).")] = None,
    stats: Annotated[Optional[str], typer.Option("--stats", help="checkpoint | store: normalisation stats (sets train.stats).")] = None,
    freeze_vision: Annotated[bool, typer.Option("--freeze-vision", help="Freeze the vision tower (sets train.freeze_vision).")] = False,
    train_expert_only: Annotated[bool, typer.Option("--train-expert-only", help="Train the action expert, projections and condition only.")] = False,
    redraw_dropout: Annotated[bool, typer.Option("--redraw-dropout", help="Redraw condition dropout each epoch from the raw labels.")] = False,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Train a policy on every labelled window: one flow-matching forward per batch, each sample conditioned on its own label."""
    flags = [f"policy.path={policy}"] if policy is not None else []
    flags += [f"train.objective={objective}"] if objective is not None else []
    flags += [f"train.stats={stats}"] if stats is not None else []
    flags += [f"train.{name}=true" for name, on in (("freeze_vision", freeze_vision), ("train_expert_only", train_expert_only),
                                                    ("redraw_dropout", redraw_dropout)) if on]
    cfg = resolve(config, overrides, *flags)

    from cfgrl.config import given_keys
    from cfgrl.train.trainer import train  # torch only when the command runs

    final = train(cfg, stores, labels, out, resume, given_keys(config, [*(overrides or []), *flags]))
    typer.echo(f"final policy: {final}")
