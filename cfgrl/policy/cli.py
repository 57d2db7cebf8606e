"""`cfgrl export`: write a policy checkpoint in another framework's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve
from cfgrl.errors import CfgrlError


def export_command(
    policy_dir: Annotated[Path, typer.Argument(help="cfgrl (or lerobot pi0 / pi05) policy checkpoint directory")],
    out: Annotated[Path, typer.Argument(help="output directory (must not exist)")],
    lerobot: Annotated[bool, typer.Option("--lerobot", help="write lerobot's pi0 / pi05 layout, as the policy's family (config.json + model.safetensors)")] = False,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="PaliGemma SentencePiece model (pi0 preset)")] = None,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Export POLICY_DIR to OUT in lerobot's pi0 or pi05 layout (its family): the conditional policy (w = 1).

    A trained bias or concat condition is folded into the model's biases (exact at w = 1); a trained token
    condition cannot be exported; a never-trained condition is dropped (the policy is the plain model)."""
    cfg = resolve(config, overrides)
    if not lerobot:
        raise CfgrlError("choose an export format: --lerobot (the only one supported)")
    if out.exists():
        raise CfgrlError(f"{out} already exists; choose a new output directory")
    from cfgrl.policy.checkpoint import export_lerobot
    from cfgrl.policy.policy import PI0Policy

    policy = PI0Policy.from_pretrained(policy_dir, tokenizer=tokenizer or cfg.policy.tokenizer)
    export_lerobot(policy, out)
    what = f" (its o = 1 condition folded in: the policy at w = 1, {policy.config.condition_mode} mode)" if policy.condition_trained else ""
    typer.echo(f"exported policy {policy.policy_id} to {out} in lerobot's {policy.config.family} layout{what}")
