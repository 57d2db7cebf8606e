"""`cfgrl round`, `cfgrl ablate`, `cfgrl demo`, `cfgrl spread` and `cfgrl curve`: the stages chained, resumable at every step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgrl.cli_common import ConfigOption, OverrideOption, resolve


def round_command(
    root: Annotated[Path, typer.Argument(help="Directory of the rounds (round_001/, round_002/, ...).")],
    policy: Annotated[Optional[Path], typer.Option("--policy", help="Starting checkpoint of round 1 (later rounds start from the previous round's).")] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="How many rounds to run now.")] = 1,
    keep_stores: Annotated[int, typer.Option("--keep-stores", help="Also train on the stores of this many earlier rounds.")] = 0,
    with_store: Annotated[Optional[list[Path]], typer.Option("--with-store", help="Also label and train on this store in every round, e.g. the base's demonstrations (repeatable).")] = None,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Collect with the latest checkpoint at its validation-chosen w, label its own store, train from it, evaluate."""
    from cfgrl.pipeline.rounds import lineage, run_round

    cfg = resolve(config, overrides)
    for _ in range(rounds):
        run_round(cfg, root, policy, keep_stores, with_stores=tuple(with_store or ()))
    typer.echo(lineage(root))


def ablate_command(
    store: Annotated[Path, typer.Argument(help="The store every setting relabels (collected once).")],
    policy: Annotated[Path, typer.Option("--policy", help="The checkpoint every setting fine-tunes.")],
    out: Annotated[Path, typer.Option("--out", help="Directory of the ablation runs, table and plot.")],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", help="section.key=v1,v2,... (repeatable); default: dropout_prob, label_source, label_scheme, condition_mode, use_prefix_dropout.")] = None,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Sweep the design note's factors one at a time from the defaults; write one table and one plot."""
    from cfgrl.pipeline.ablate import parse_grid, run_ablation

    cfg = resolve(config, overrides)
    run_ablation(cfg, store, policy, out, parse_grid(grid))


DemoNoise = Annotated[float, typer.Option("--demo-noise", help="Noise of the scripted demonstrations the base imitates (success ~ 1 - noise).")]
DemoEpisodes = Annotated[int, typer.Option("--demo-episodes", help="Scripted demonstrations for the base policy.")]
BaseSteps = Annotated[int, typer.Option("--base-steps", help="Behaviour-cloning steps of the base policy.")]
BaseLr = Annotated[float, typer.Option("--base-lr", help="Peak learning rate of the base policy's behaviour cloning.")]


def base_command(
    root: Annotated[Path, typer.Argument(help="Directory for demos.zarr (with --store: base.labels) and base/ (the policy is base/policy).")],
    store: Annotated[Optional[list[Path]], typer.Option("--store", help="Behaviour-clone on this store (e.g. one `cfgrl import` wrote) instead of collecting scripted demonstrations; labels go to ROOT/base.labels (repeatable).")] = None,
    demo_noise: Annotated[Optional[float], typer.Option("--demo-noise", help="Noise of the scripted demonstrations the base imitates (success ~ 1 - noise; default 0.3; not with --store).")] = None,
    demo_episodes: Annotated[Optional[int], typer.Option("--demo-episodes", help="Scripted demonstrations for the base policy (default 512; not with --store).")] = None,
    base_steps: BaseSteps = 1500,
    base_lr: BaseLr = 1e-3,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """A base policy by behaviour cloning: on noisy scripted demonstrations (envs with scripted experts: builtin, libero, metaworld), or on --store."""
    from cfgrl.errors import CfgrlError
    from cfgrl.pipeline.demo import build_base, build_base_on_stores

    cfg = resolve(config, overrides)
    if store:
        given = [name for name, value in (("--demo-noise", demo_noise), ("--demo-episodes", demo_episodes)) if value is not None]
        if given:
            raise CfgrlError(f"{' and '.join(given)} describe{'s' if len(given) == 1 else ''} scripted demonstrations, "
                             "which --store replaces; drop one or the other")
        policy = build_base_on_stores(cfg, root, store, base_steps, base_lr)
    else:
        policy = build_base(cfg, root, 0.3 if demo_noise is None else demo_noise, 512 if demo_episodes is None else demo_episodes,
                            base_steps, base_lr)
    typer.echo(f"base policy: {policy}")


def demo_command(
    root: Annotated[Path, typer.Argument(help="Directory of the demonstration (base, rounds, baselines, report).")],
    demo_noise: DemoNoise = 0.3,
    demo_episodes: DemoEpisodes = 512,
    base_steps: BaseSteps = 1500,
    base_lr: BaseLr = 1e-3,
    second_round: Annotated[bool, typer.Option("--second-round/--one-round", help="Also run round 2.")] = True,
    keep_demos: Annotated[bool, typer.Option("--keep-demos", help="Label and train every round and baseline on the base's demonstrations too, beside the rollouts.")] = False,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Base policy by BC, a CFGRL round with a w sweep, filtered-BC and weighted baselines, round 2, a report."""
    from cfgrl.pipeline.demo import run_demo

    run_demo(resolve(config, overrides), root, demo_noise, demo_episodes, base_steps, base_lr, second_round, keep_demos)


def spread_command(
    root: Annotated[Path, typer.Argument(help="Directory of the repeated comparison (seed_<s>/, report).")],
    policy: Annotated[Path, typer.Option("--policy", help="The fixed base checkpoint every seed starts from.")],
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds of collection, condition dropout and training.")] = "0,1,2",
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Round 1, filtered BC and weighted over several seeds from one base: mean and spread of each arm."""
    from cfgrl.errors import CfgrlError
    from cfgrl.pipeline.spread import run_spread

    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise CfgrlError(f"--seeds '{seeds}' is not a comma-separated list of integers (e.g. 0,1,2)") from None
    run_spread(resolve(config, overrides), root, policy, values)


def curve_command(
    run: Annotated[Path, typer.Argument(help="A training run directory (`cfgrl train --out RUN`) that kept checkpoints (train.keep_every).")],
    out: Annotated[Path, typer.Option("--out", help="Directory of the per-checkpoint evaluations, curve.csv and curve.png.")],
    every: Annotated[int, typer.Option("--every", help="Evaluate every N-th kept checkpoint (the newest always).")] = 1,
    config: ConfigOption = None,
    overrides: OverrideOption = None,
) -> None:
    """Validation success against training steps: every kept checkpoint on the validation episodes alone, at every w."""
    from cfgrl.pipeline.curve import run_curve

    run_curve(resolve(config, overrides), run, out, every)
