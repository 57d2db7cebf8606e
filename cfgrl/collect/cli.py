"""`cfgrl collect`: roll out a policy into a Zarr store, resumable.

    cfgrl collect data/builtin/reach.zarr --policy scripted:0.3 --episodes 64 -o collect.group_size=8
    cfgrl collect data/libero/spatial.zarr --policy ckpt/ -o env.name=libero -o env.suite=libero_spatial
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve

PolicyOption = Annotated[
    Optional[str],
    typer.Option("--policy", help="Checkpoint DIR, scripted:NOISE (the env's scripted expert: builtin, libero, metaworld; NOISE in [0, 1]), "
                 "or nothing for a fresh random policy.preset (runs, learns nothing)."),
]


def collect_command(
    store: Annotated[Path, typer.Argument(help="Zarr store to create or extend; re-running the same command resumes it.")],
    policy: PolicyOption = None,
    episodes: Annotated[Optional[int], typer.Option("--episodes", help="Episodes to collect, rounded up to whole groups of K (sets collect.groups).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Environment worker processes (sets collect.workers).")] = None,
    shard: Annotated[int, typer.Option("--shard", help="Which shard of the group grid to collect (0-based).")] = 0,
    num_shards: Annotated[int, typer.Option("--num-shards", help="Split the group grid into this many shards of whole groups (not with collect.adaptive).")] = 1,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Roll out a policy and append whole episodes, in groups of K per (task, init state), to a Zarr store."""
    from cfgrl.collect.run import collect
    from cfgrl.rollout.plan import groups_for_episodes

    cfg = resolve(config, overrides, *([f"collect.workers={workers}"] if workers is not None else []))
    if episodes is not None:
        cfg.collect.groups = groups_for_episodes(episodes, cfg.collect.group_size)
    collect(cfg, store, policy, shard, num_shards)
