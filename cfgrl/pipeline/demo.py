"""`cfgrl demo`: the measured demonstration on an environment with scripted experts (builtin, metaworld).

1. base      behaviour cloning (label_source none) on noisy scripted demonstrations
2. round 1   collect K rollouts per init state with the base -> episode_rloo labels -> CFGRL
             fine-tuning -> w sweep on held-out test init states, paired seeds, against the base;
             w chosen on validation init states
3. baselines on round 1's stores and label version, same steps: filtered BC (o=1 windows only, no
             guidance) and the retired advantage-weighted two-branch loss
   (``keep_demos``: every round and baseline also labels and trains on the base's demonstrations)
4. round 2   the same from round 1's policy at its validation-chosen w
5. report    DEMO_DIR/report.md (+ report.json): every curve with intervals and the time each step took;
             DEMO_DIR/comparison.png: the curves and levels of every arm in one figure
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cfgrl import atomic, provenance
from cfgrl.config import Config, with_overrides
from cfgrl.evaluate.compare import compare_evaluations
from cfgrl.evaluate.plan import POLICY, require_validation
from cfgrl.evaluate.summary import load_results, overall_rows
from cfgrl.pipeline import rounds, stages
from cfgrl.schemas import DEMO_REPORT
from cfgrl.train.objectives import UNCONDITIONED_OBJECTIVES

DEMOS = "demos.zarr"  # the base's demonstrations, under the demonstration's directory


def build_base(cfg: Config, root: Path, noise: float, episodes: int, steps: int, lr: float) -> Path:
    """A base policy: behaviour cloning of a fresh policy on ``episodes`` noisy scripted demonstrations."""
    demos = root / DEMOS
    # Demonstrations need no RLOO groups: the smallest K spreads them over the most init states.
    bc = with_overrides(bc_settings(cfg, steps, lr), ["collect.group_size=2", f"collect.groups={-(-episodes // 2)}"])
    stages.collect(bc, demos, f"scripted:{noise}")
    labels = stages.label(bc, [demos])
    return stages.train(bc, [demos], labels, root / "base", None)


def build_base_on_stores(cfg: Config, root: Path, stores: list[Path], steps: int, lr: float) -> Path:
    """A base policy: behaviour cloning of a fresh policy on ``stores`` as they are (an imported
    LeRobotDataset's demonstrations, say). Their labels go to ``root/base.labels``, beside the base,
    so the stores are only read."""
    from cfgrl.errors import CfgrlError

    for store in stores:
        if not (store / "zarr.json").is_file():
            what = "does not exist" if not store.exists() else "is not a store (no zarr.json)"
            raise CfgrlError(f"--store '{store}' {what}; give a store written by `cfgrl import` or `cfgrl collect`")
    bc = bc_settings(cfg, steps, lr)
    labels = stages.label(bc, stores, root / "base.labels")
    return stages.train(bc, stores, labels, root / "base", None)


def bc_settings(cfg: Config, steps: int, lr: float) -> Config:
    """Behaviour cloning (every window ∅) for ``steps``. From scratch a tiny PI0 needs a larger learning
    rate than PI0's fine-tuning default; the cosine schedule decays over exactly ``steps``. The base
    imitates every demonstration, the failed ones too, whatever the fine-tuning's recipe drops: it is
    meant to fail sometimes, the way its demonstrations do."""
    return with_overrides(cfg, ["cfgrl.label_source=none", "cfgrl.failed_episodes=keep", f"train.steps={steps}",
                                f"train.decay_steps={steps}", f"train.lr={lr}", f"train.decay_lr={lr / 10}"])


class Timer:
    """Times the demonstration's steps for its report. A step whose output existed before it ran was
    reused, not run: it keeps the time it took when it ran (from ``previous``, an earlier report's
    timings), so a rerun that only rewrites the report does not report start-up as the step's time."""

    def __init__(self, previous: dict[str, float] | None = None) -> None:
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []
        self.previous = previous or {}

    def __call__(self, name: str, output: Path, fn, *args, **kwargs):
        reused = Path(output).exists()
        start = time.monotonic()
        out = fn(*args, **kwargs)
        took = round(time.monotonic() - start, 1)
        self.timings[name] = self.previous.get(name, took) if reused else took
        if reused:
            self.reused.append(name)
            print(f"demo: {name} reused (finished by an earlier run; {took:.0f} s now)")
        else:
            print(f"demo: {name} took {took:.0f} s")
        return out


def compare(cfg: Config, root: Path, base: Path, timed: Timer,
            with_stores: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Round 1 from ``base`` under ``root/rounds``, then the filtered-BC and weighted baselines on
    round 1's stores and label version with its training budget. Returns (round 1's record, each
    baseline's evaluation results)."""
    rounds_root = root / "rounds"
    first = timed("round 1 (collect, label, train, evaluate)", rounds.RoundDir(rounds_root, 1).record, rounds.run_round,
                  cfg, rounds_root, base, number=1, with_stores=with_stores)
    stores, labels = [Path(s) for s in first["stores"]], Path(first["label_version"])
    baselines = {}
    for objective in ("filtered_bc", "weighted"):
        setting = with_overrides(cfg, [f"train.objective={objective}"])
        if objective in UNCONDITIONED_OBJECTIVES:  # the same policy at every w
            setting = with_overrides(setting, ["evaluate.cfg_scales=[1.0]"])
        run_dir, eval_dir = root / objective / "train", root / objective / "eval"
        policy = timed(f"baseline {objective} (train)", run_dir / "policy", stages.train, setting, stores, labels, run_dir, base)
        baselines[objective] = timed(f"baseline {objective} (evaluate)", eval_dir / "results.json", stages.evaluate,
                                     setting, policy, eval_dir)
    return first, baselines


def cfgrl_minus_baselines(first: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Round 1 at its chosen w minus each baseline at its chosen w, paired on the same test episodes:
    objective -> [difference, 95% low, 95% high]."""
    out = {}
    for objective, results in baselines.items():
        out[objective] = _as_list(compare_evaluations(first["eval"], results["out_dir"], first["chosen_cfg_scale"],
                                                      results["chosen_cfg_scale"]))
    return out


def rounds_minus_base(records: dict[str, dict[str, Any] | None]) -> dict[str, list[float]]:
    """Each round at its chosen w minus the base, paired on the same test episodes: round key ->
    [difference, 95% low, 95% high]. The base is round 1's start policy, its evaluation's baseline arm."""
    first = records["round_1"]
    return {key: _as_list(compare_evaluations(record["eval"], first["eval"], record["chosen_cfg_scale"], b_baseline=True))
            for key, record in records.items() if record}


def _as_list(comparison) -> list[float]:
    d = comparison.difference
    return [d.diff, d.low, d.high]


def run_demo(cfg: Config, root: Path, noise: float, demo_episodes: int, base_steps: int, base_lr: float,
             second_round: bool = True, keep_demos: bool = False) -> dict[str, Any]:
    require_validation(cfg, "cfgrl demo")
    timed = Timer(previous_timings(root / "report.json"))
    base = timed("base policy (scripted demos, BC)", root / "base" / "policy", build_base, cfg, root, noise, demo_episodes,
                 base_steps, base_lr)
    with_stores = (root / DEMOS,) if keep_demos else ()
    first, baselines = compare(cfg, root, base, timed, with_stores)
    rounds_root = root / "rounds"
    second = (timed("round 2", rounds.RoundDir(rounds_root, 2).record, rounds.run_round, cfg, rounds_root, None, number=2,
                    with_stores=with_stores) if second_round else None)

    report = {**DEMO_REPORT.stamp(), "env": environment_name(cfg), "timings_s": timed.timings, "reused_steps": timed.reused,
              "base": str(base),
              "keep_demos": str(root / DEMOS) in first["stores"],  # what round 1 did, also when a rerun's flag differs
              "round_1": first, "round_2": second,
              "baselines": {k: _overall(v) for k, v in baselines.items()},
              "baselines_chosen_cfg_scale": {k: v["chosen_cfg_scale"] for k, v in baselines.items()},
              "cfgrl_minus_baselines": cfgrl_minus_baselines(first, baselines),
              "rounds_minus_base": rounds_minus_base({"round_1": first, "round_2": second}),
              "provenance": provenance.record()}
    atomic.write_text(root / "report.json", json.dumps(report, indent=2) + "\n")
    round_rows = {key: _round_rows(report[key]) for key in ("round_1", "round_2") if report[key]}
    (root / "report.md").write_text(render_report(report, round_rows, rounds_root) + "\n")
    plot_comparison(report, round_rows, root / "comparison.png")
    print((root / "report.md").read_text())
    return report


def previous_timings(path: Path) -> dict[str, float]:
    """The step times an earlier run of this demonstration recorded: none before its first report, or
    when the report is of another version (the report is rebuilt, so an old one is replaced, not refused)."""
    report = json.loads(path.read_text()) if path.is_file() else None
    return report["timings_s"] if DEMO_REPORT.matches(report) else {}


def environment_name(cfg: Config) -> str:
    """How the report names the environment, e.g. 'Meta-World MT10'."""
    return {"builtin": f"the built-in environment ({cfg.env.suite})", "metaworld": f"Meta-World {cfg.env.suite}",
            "libero": f"LIBERO {cfg.env.suite}"}.get(cfg.env.name, cfg.env.name)


def _round_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The overall test rows of a round's evaluation."""
    return _overall(load_results(record["eval"]))


def _overall(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The overall test rows, the w chosen on validation flagged."""
    chosen = results["chosen_cfg_scale"]
    keys = ("arm", "cfg_scale", "episodes", "success_rate", "ci_low", "ci_high", "diff_vs_w1", "diff_ci_low", "diff_ci_high")
    return [{**{k: r[k] for k in keys}, "chosen": r["role"] == POLICY and r["cfg_scale"] == chosen} for r in overall_rows(results)]


def render_report(report: dict[str, Any], round_rows: dict[str, list[dict[str, Any]]], rounds_root: Path) -> str:
    lines = [f"# CFGRL demonstration on {report['env']}", ""]
    if report["keep_demos"]:
        lines += ["Every round and baseline labels and trains on the base's demonstrations too (`--keep-demos`).", ""]
    for key, rows in round_rows.items():
        record = report[key]
        lines += [f"## Round {record['round']} (collected at w={record['collect_cfg_scale']:g}; w = {record['chosen_cfg_scale']:g} chosen on "
                  f"{record['chosen_on']}; **bold**: the reported result)", "",
                  "| arm | test episodes | test success (95% Wilson CI) | paired diff vs w=1 (95% CI) |", "|---|---|---|---|"]
        lines += [_row(r) for r in rows]
        lines += ["", f"![success vs w]({Path(record['eval']) / 'success_vs_w.png'})", ""]
    lines += ["## Every arm in one figure", "", "![comparison](comparison.png)", "",
              "## Baselines on round 1's stores and labels (w chosen on validation in bold)", "",
              "| objective | arm | test episodes | test success (95% Wilson CI) | paired diff vs w=1 (95% CI) |", "|---|---|---|---|---|"]
    for objective, rows in report["baselines"].items():
        lines += [f"| {objective} " + _row(r) for r in rows]
    lines += ["", "Round 1 at its chosen w minus each baseline at its chosen w, paired on the same test episodes:", ""]
    lines += [f"- {objective}: {format_difference(d)}" for objective, d in report["cfgrl_minus_baselines"].items()]
    lines += ["", "## Against the base", "", "Each round at its chosen w minus the base (round 1's start policy), "
              "paired on the same test episodes:", ""]
    lines += [f"- {key.replace('_', ' ')}: {format_difference(d)}" for key, d in report["rounds_minus_base"].items()]
    lines += ["", "## Time per step (2 CPU cores)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f}{' (reused: timed when an earlier run ran it)' if k in report['reused_steps'] else ''} |"
              for k, v in report["timings_s"].items()]
    lines += ["", f"Lineage:", "", "```", rounds.lineage(rounds_root), "```"]
    return "\n".join(lines)


def format_difference(d: list[float]) -> str:
    return f"{d[0]:+.1%} (95% CI {d[1]:+.1%}, {d[2]:+.1%})"


def _row(r: dict[str, Any]) -> str:
    diff = "" if r.get("diff_vs_w1") is None else f"{r['diff_vs_w1']:+.1%} ({r['diff_ci_low']:+.1%}, {r['diff_ci_high']:+.1%})"
    arm = f"{r['arm']} (start policy at w={r['cfg_scale']:g})" if r["arm"] == "baseline" else r["arm"]
    success = f"{r['success_rate']:.1%} ({r['ci_low']:.1%}-{r['ci_high']:.1%})"
    if r.get("chosen"):
        arm, success = f"**{arm}**", f"**{success}**"
    return f"| {arm} | {r['episodes']} | {success} | {diff} |"


def plot_comparison(report: dict[str, Any], round_rows: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Every guided arm (the CFGRL rounds, the weighted baseline) as a curve over w; the base policy
    and the unconditioned baselines, which have no w, as levels."""
    from cfgrl.evaluate.plot import plot_curves

    curves = {f"CFGRL round {report[key]['round']}": [r for r in rows if r["arm"] != "baseline"] for key, rows in round_rows.items()}
    levels = {"base policy": next(r for r in round_rows["round_1"] if r["arm"] == "baseline")}
    for name, rows in report["baselines"].items():
        if name in UNCONDITIONED_OBJECTIVES:
            levels[f"{name} (baseline)"] = rows[0]
        else:
            curves[f"{name} (baseline)"] = rows
    n = levels["base policy"]["episodes"]
    return plot_curves(curves, levels, f"CFGRL demonstration, {report['env']} ({n} paired episodes per arm)", path)
