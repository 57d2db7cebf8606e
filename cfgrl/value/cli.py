"""`cfgrl value`: train the cross-fitted value models on stores and write V for every stored frame."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve


def value_command(
    stores: Annotated[list[Path], typer.Argument(help="Store directories (.zarr) written by `cfgrl collect`.")],
    out: Annotated[Path, typer.Option("--out", help="New directory for the values, models, training log and calibration plot.")],
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Train a distributional value model (RECAP's rewards, two folds) and write V for every stored frame."""
    from cfgrl.store import open_stores
    from cfgrl.value.fit import fit_values, summary_text

    cfg = resolve(config, overrides)
    output = fit_values(open_stores(list(stores)), cfg, out)
    typer.echo(summary_text(output))
    typer.echo(f"wrote value model {output.id}: {output.path} (label with `cfgrl label STORE --value {output.path} "
               "-o cfgrl.label_source=value`)")
