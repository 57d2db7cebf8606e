"""The ``cfgrl`` command: one subcommand per stage, plus inspection and pipeline helpers.

Each stage module owns its command function (imported here); heavy imports (torch, zarr, LIBERO)
happen inside the commands so ``cfgrl --help`` stays fast. This module sits above every stage and
the pipeline: ``inspect``, which reads both a store (collect) and a rounds root (pipeline), lives here
so that no stage imports the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, exits_cleanly, resolve
from cfgrl.config import describe

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])


@app.command("config")
@exits_cleanly
def config_command() -> None:
    """Print every setting with its default and a one-line help."""
    typer.echo(describe())


def inspect_command(
    store: Annotated[Path, typer.Argument(help="A store written by `cfgrl collect`, a directory of `cfgrl round` rounds, or a policy checkpoint (cfgrl, lerobot or openpi).")],
    verify: Annotated[bool, typer.Option("--verify", help="A store: decode every committed chunk (a plain inspect only checks that each exists).")] = False,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Summarise a store (episodes, steps, success per task, size, schema, policy ids, per run its (task, init state)
    pairs), the lineage of rounds, or a policy checkpoint (layout, family, sizes, chunk, state input, stats kind,
    condition mode and whether it was trained)."""
    cfg = resolve(config, overrides)  # same options as every command; collect.adaptive_patience sets "skipped"
    if (store / "config.json").is_file():
        from cfgrl.policy.describe import describe_policy

        typer.echo(describe_policy(store))
        return
    if store.is_dir() and not (store / "zarr.json").exists() and any(store.glob("round_*")):
        from cfgrl.pipeline.rounds import lineage

        typer.echo(lineage(store))
        return
    from cfgrl.collect.report import store_summary

    typer.echo(store_summary(store, cfg.collect.adaptive_patience, verify))


def _register() -> None:
    from cfgrl.collect.cli import collect_command
    from cfgrl.evaluate.cli import compare_command, evaluate_command
    from cfgrl.label.cli import label_command
    from cfgrl.lerobot_data.cli import export_dataset_command, import_command
    from cfgrl.pipeline.cli import ablate_command, base_command, curve_command, demo_command, round_command, spread_command
    from cfgrl.policy.cli import export_command
    from cfgrl.train.cli import train_command
    from cfgrl.value.cli import value_command

    app.command("collect")(exits_cleanly(collect_command))
    app.command("inspect")(exits_cleanly(inspect_command))
    app.command("value")(exits_cleanly(value_command))
    app.command("label")(exits_cleanly(label_command))
    app.command("train")(exits_cleanly(train_command))
    app.command("evaluate")(exits_cleanly(evaluate_command))
    app.command("compare")(exits_cleanly(compare_command))
    app.command("export")(exits_cleanly(export_command))
    app.command("import")(exits_cleanly(import_command))
    app.command("export-dataset")(exits_cleanly(export_dataset_command))
    app.command("base")(exits_cleanly(base_command))
    app.command("round")(exits_cleanly(round_command))
    app.command("ablate")(exits_cleanly(ablate_command))
    app.command("demo")(exits_cleanly(demo_command))
    app.command("spread")(exits_cleanly(spread_command))
    app.command("curve")(exits_cleanly(curve_command))


_register()

if __name__ == "__main__":
    app()
