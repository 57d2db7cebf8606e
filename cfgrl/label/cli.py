"""`cfgrl label`: label the windows of one or more stores and save a versioned label index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve


def _print_versions(root: Path) -> None:
    from cfgrl.label.index import list_versions
    from cfgrl.label.report import threshold_text

    versions = list_versions(root)
    if not versions:
        typer.echo(f"{root}: no label version yet")
        return
    typer.echo(f"{root}:")
    for v in versions:
        s, c = v["settings"], v["counts"]
        names = f"  names: {', '.join(v['names'])}" if v["names"] else ""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["created"]))
        typer.echo(
            f"  {v['version']}  {created} UTC  {s['label_source']}/{s['label_scheme']}  {threshold_text(s)}  "
            f"dropout {s['dropout_prob']}  seed {s['seed']}  {c['windows']} windows, o=1 {c['label_share']['1']:.1%}{names}"
        )


def label_command(
    stores: Annotated[list[Path], typer.Argument(help="Store directories (.zarr) written by `cfgrl collect`.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Directory of the label versions (default: STORE.labels beside the first store).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Alias for the version (never moved once given).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the label versions of the stores and exit.")] = False,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="The checkpoint `cfgrl train --policy` will start from: windows get its chunk length (sets policy.path; default: a fresh policy.preset's; policy.chunk_size overrides).")] = None,
    value: Annotated[Optional[Path], typer.Option("--value", help="Output directory of `cfgrl value` (for -o cfgrl.label_source=value).")] = None,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Label windows with optimality labels (cfgrl.* settings) and save a versioned parquet index.

    A window holds as many actions as the chunk of the policy that will train on it."""
    from cfgrl.label.index import labels_dir, make_label_index
    from cfgrl.label.report import summary_text
    from cfgrl.store import open_stores

    if list_:
        roots = [out.absolute()] if out is not None else [labels_dir(p) for p in stores]
        for root in dict.fromkeys(roots):
            _print_versions(root)
        return
    from cfgrl.policy.layout import policy_chunk_size

    cfg = resolve(config, overrides, *([f"policy.path={policy}"] if policy is not None else []))
    source = Path(cfg.policy.path) if cfg.policy.path else None
    horizon = policy_chunk_size(cfg.policy.chunk_size, source, cfg.policy.preset)
    value_output = None
    if value is not None:
        from cfgrl.value.output import ValueOutput

        value_output = ValueOutput.read(value)
    from cfgrl.config import given_keys

    # the stores' own replan_steps unless the user set one, which must then agree with them
    replan = cfg.inference.replan_steps if "inference.replan_steps" in given_keys(config, overrides) else None
    index = make_label_index(open_stores(list(stores)), cfg.cfgrl, replan, out, name, horizon=horizon, value=value_output)
    typer.echo(summary_text(index.manifest))
    verb = "reused existing" if index.reused else "wrote"
    typer.echo(f"{verb} version {index.version}: {index.path}" + (f" (name '{name}')" if name else ""))
