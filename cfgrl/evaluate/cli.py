"""``cfgrl evaluate``: success of a checkpoint against the guidance weight w, with intervals."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Mapping, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve
from cfgrl.config import Config
from cfgrl.errors import CfgrlError


def parse_cfg_scales(text: str) -> list[float]:
    """``0,1,1.5`` -> [0.0, 1.0, 1.5]; empty lists, negative or non-finite weights are errors."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise CfgrlError(f"--cfg-scales '{text}' is empty; give comma-separated guidance weights >= 0, e.g. 0,1,2")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CfgrlError(f"--cfg-scales '{text}' is not a comma-separated list of numbers (e.g. 0,1,1.5,3)") from None
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise CfgrlError(f"--cfg-scales must all be finite numbers >= 0 (0 = unconditional, 1 = conditional), got {text}")
    return values


def apply_env_cfg_scale(cfg: Config, listed_on_command_line: bool, environ: Mapping[str, str] | None = None) -> Config:
    """PI0_CFG_SCALE evaluates that single w, unless a list was given on the command line (which wins)."""
    environ = os.environ if environ is None else environ
    if not listed_on_command_line and "PI0_CFG_SCALE" in environ:
        cfg.evaluate.cfg_scales = [cfg.inference.cfg_scale]  # load_config already copied PI0_CFG_SCALE there
    return cfg


def evaluate_command(
    paths: Annotated[list[Path], typer.Argument(metavar="POLICY|SHARD_DIRS", help="Policy checkpoint directory to evaluate; with --merge, the run directories of every shard.")],
    cfg_scales: Annotated[Optional[str], typer.Option("--cfg-scales", help="Comma-separated guidance weights, e.g. 0,1,1.5,2,3 (default: evaluate.cfg_scales; PI0_CFG_SCALE alone gives one w).")] = None,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="libero (every task, its 50 fixed init states, one episode each) or custom (env.tasks x env.init_states).")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="Base checkpoint evaluated on the same episodes, as an extra row.")] = None,
    baseline_cfg_scale: Annotated[float, typer.Option("--baseline-cfg-scale", help="The baseline's w: 0 (unguided) for a base; a previous round's policy runs at its validation-chosen w.")] = 0.0,
    store: Annotated[Optional[Path], typer.Option("--store", help="Also append the evaluation episodes to this Zarr store (one run per w).")] = None,
    suite: Annotated[Optional[list[str]], typer.Option("--suite", help="Suite to evaluate (repeatable; default env.suite).")] = None,
    shard: Annotated[Optional[int], typer.Option("--shard", help="Run only this shard of the plan (0-based; with --num-shards): whole (task, init state) slots, every w of a slot in one shard.")] = None,
    num_shards: Annotated[Optional[int], typer.Option("--num-shards", help="Split the plan into this many shards; each writes a shard run directory (no results table) for --merge.")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Combine the shard run directories given as arguments into one run (--out): the results table and plot of the whole plan.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default POLICY/eval/<run name>); rerunning into it resumes. Required with --merge.")] = None,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Roll out POLICY at each guidance weight w on the same init states and seeds; write results.json,
    results.csv, success_vs_w.png, config.json and episodes.jsonl; print the w chosen on validation init states.
    With --shard/--num-shards run one shard of it; with --merge combine the shards."""
    if merge:
        given = {"--cfg-scales": cfg_scales, "--protocol": protocol, "--baseline": baseline, "--store": store, "--suite": suite,
                 "--shard": shard, "--num-shards": num_shards, "--config": config, "--set": overrides,
                 "--baseline-cfg-scale": baseline_cfg_scale or None}
        _merge(paths, out, [flag for flag, value in given.items() if value is not None])
        return
    if len(paths) != 1:
        raise CfgrlError(f"give one POLICY checkpoint directory, got {len(paths)} paths (several directories only with --merge)")
    if (shard is None) != (num_shards is None):
        raise CfgrlError("--shard and --num-shards go together: --shard i --num-shards N with 0 <= i < N")
    extra = []
    if cfg_scales is not None:
        extra.append(f"evaluate.cfg_scales=[{', '.join(repr(w) for w in parse_cfg_scales(cfg_scales))}]")
    if protocol is not None:
        extra.append(f"evaluate.protocol={protocol}")
    cfg = resolve(config, overrides, *extra)
    apply_env_cfg_scale(cfg, cfg_scales is not None or any(o.strip().startswith("evaluate.cfg_scales") for o in overrides or []))

    from cfgrl.evaluate.runner import evaluate_policy, evaluate_shard
    from cfgrl.evaluate.summary import format_table

    if shard is not None:
        manifest = evaluate_shard(cfg, paths[0], shard, num_shards, out_dir=out, baseline_dir=baseline,
                                  baseline_cfg_scale=baseline_cfg_scale, store=store, suites=suite)
        run_dir = manifest["meta"]["out_dir"]
        typer.echo(f"shard {shard} of {num_shards} (plan {manifest['plan_digest']}): {manifest['episodes']} episodes in {run_dir}")
        typer.echo("when every shard has run: cfgrl evaluate --merge SHARD_DIR... --out OUT")
        return
    results = evaluate_policy(cfg, paths[0], out_dir=out, baseline_dir=baseline, baseline_cfg_scale=baseline_cfg_scale,
                              store=store, suites=suite)
    typer.echo(format_table(results))
    typer.echo(f"results: {results['out_dir']}")


def _merge(dirs: list[Path], out: Path | None, other_options: list[str]) -> None:
    if other_options:
        raise CfgrlError(f"--merge takes only the shard directories and --out (the shards fix everything else); drop {', '.join(other_options)}")
    if out is None:
        raise CfgrlError("--merge needs --out DIR: the run directory of the merged results")

    from cfgrl.evaluate.runner import merge_shards
    from cfgrl.evaluate.summary import format_table

    results = merge_shards(dirs, out)
    typer.echo(format_table(results))
    typer.echo(f"results: {results['out_dir']} (merged from {len(results['shards'])} shards)")


def compare_command(
    a: Annotated[Path, typer.Argument(help="Evaluation directory A (holds results.json and episodes.jsonl).")],
    b: Annotated[Path, typer.Argument(help="Evaluation directory B, run on the same test episodes.")],
    w_a: Annotated[Optional[float], typer.Option("--w-a", help="A's guidance weight (default: A's validation-chosen w).")] = None,
    w_b: Annotated[Optional[float], typer.Option("--w-b", help="B's guidance weight (default: B's validation-chosen w).")] = None,
    b_baseline: Annotated[bool, typer.Option("--b-baseline", help="Take B's baseline arm (the checkpoint given to its --baseline, at the w it ran), e.g. `cfgrl compare X X --b-baseline`: X's policy against its start.")] = False,
) -> None:
    """Paired difference A minus B on the test episodes both evaluations ran, with its 95% Newcombe interval."""
    from cfgrl.evaluate.compare import compare_evaluations

    typer.echo(compare_evaluations(a, b, w_a, w_b, b_baseline).describe())
