"""`cfgrl import` and `cfgrl export-dataset`: LeRobotDataset v3.0 in and out.

    cfgrl import data/libero/demos.zarr --lerobot ~/datasets/libero --suite libero_spatial -c configs/libero.yaml
    cfgrl export-dataset data/libero/rollouts.zarr data/libero/rollouts.lerobot --labels data/libero/rollouts.zarr@v1
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve


def import_command(
    store: Annotated[Path, typer.Argument(help="Zarr store to create or extend; re-running the same command resumes it.")],
    lerobot: Annotated[Path, typer.Option("--lerobot", help="A local LeRobotDataset v3.0 directory (meta/info.json, data/, videos/).")],
    suite: Annotated[Optional[str], typer.Option("--suite", help="The suite whose task prompts the dataset's tasks map onto (sets env.suite).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse a dataset episode whose task is not in the suite (default: skip and count it).")] = False,
    camera: Annotated[Optional[list[str]], typer.Option("--camera", help="DATASET_KEY=ENV_CAMERA (repeatable); default: observation.images.image=agentview, observation.images.wrist_image=wrist.")] = None,
    success_column: Annotated[Optional[str], typer.Option("--success-column", help="A boolean feature whose value at an episode's last frame is its success (default: every episode succeeded).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Decoding threads per video.")] = 1,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Import a LeRobotDataset v3.0's episodes into a store, marked as demonstrations (train or `round --with-store` them)."""
    from cfgrl.errors import CfgrlError
    from cfgrl.lerobot_data.ingest import import_dataset, summary

    if threads < 1:
        raise CfgrlError(f"--threads must be at least 1, got {threads}")
    cfg = resolve(config, overrides, *([f"env.suite={suite}"] if suite is not None else []))
    count = import_dataset(cfg, store, lerobot, camera, strict, success_column, threads)
    typer.echo(f"imported {count} episodes; {summary(store)}")


def export_dataset_command(
    store: Annotated[Path, typer.Argument(help="A store written by `cfgrl collect` or `cfgrl import`.")],
    out: Annotated[Path, typer.Argument(help="The LeRobotDataset v3.0 directory to write (must not exist).")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="A label version of the store (STORE@VERSION_OR_NAME, or its directory): its advantages and o go to meta/advantages_<version>.parquet.")] = None,
) -> None:
    """Write a store's episodes as a LeRobotDataset v3.0 that lerobot loads (videos, tasks, episodes, stats), with a label version's advantages beside it."""
    from cfgrl.lerobot_data.export import export_dataset

    typer.echo(f"wrote LeRobotDataset v3.0 {export_dataset(store, out, labels)}")
