"""The chained stages on the smallest settings: the `make` main job, rounds with lineage, ablations,
the reduced demo. Real stores, real tiny policies, the real commands; numbers are not asserted
(a few training steps learn nothing), the artefacts and their links are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cfgrl.evaluate.summary import load_results, overall_rows

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
SMALL = {
    "env": {"name": "builtin", "suite": "reach", "image_size": 32, "tasks": [0, 1], "init_states": [0, 1, 2], "max_steps": 30},
    "collect": {"groups": 2, "group_size": 2},
    # A barely trained policy rarely succeeds, and no RLOO source labels a failure o=1: label every
    # window o=1 (a window's reward sum is >= 0, and keep leaves window_return's own estimate in
    # one-outcome groups) so the stages have labels to use.
    "cfgrl": {"label_source": "window_return", "label_threshold": 0.0, "zero_variance_groups": "keep"},
    "train": {"steps": 4, "batch_size": 8, "lr": 1.0e-3, "warmup_steps": 1, "decay_steps": 4, "save_every": 4, "log_every": 2},
    "evaluate": {"cfg_scales": [0.0, 2.0], "init_states": [3], "validation_init_states": [4], "episodes_per_init": 1},
}
pytestmark = pytest.mark.slow


def small_config(tmp_path: Path, **changes) -> Path:
    tree = json.loads(json.dumps(SMALL))
    for section, body in changes.items():
        tree[section].update(body)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def cfgrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([str(VENV / "bin" / "cfgrl"), *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def make(*targets: str, tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    # The venv running these tests is already set up: SETUP names a file that exists (order-only).
    args = ["make", "-C", str(REPO), *targets, f"VENV={VENV}", f"SETUP={sys.executable}", f"CONFIG={config}",
            f"DATA={tmp_path / 'data'}", "DEMO_EPISODES=8", "BASE_STEPS=4"]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_make_main_job_end_to_end_and_rerun_skips_finished_work(tmp_path):
    config = small_config(tmp_path)
    first = make("collect", "label", "train", "eval", tmp_path=tmp_path, config=config)
    data = tmp_path / "data"
    table = pd.read_csv(data / "eval" / "results.csv")
    overall = table[table.scope == "overall"]
    assert set(overall[overall.split == "test"].arm) == {"w=0", "w=2", "baseline"}
    assert set(overall[overall.split == "validation"].arm) == {"w=0", "w=2"}
    assert (data / "eval" / "success_vs_w.png").stat().st_size > 0
    assert "eval: results, table and plot in" in first.stdout
    # The trained policy started from the base: its store was collected by the base policy.
    base_id = json.loads((data / "base" / "policy" / "config.json").read_text())["policy_id"]
    from cfgrl.store import Store

    assert set(Store(data / "rollouts.zarr").episodes.policy_id) == {base_id}
    assert len(pd.read_parquet(next((data / "rollouts.labels").glob("*/windows.parquet")))) > 0
    second = make("collect", "label", "train", "eval", tmp_path=tmp_path, config=config)
    assert "0 to collect" in second.stdout and "train: skip" in second.stdout and "already recorded" in second.stderr


def test_rounds_record_their_lineage(tmp_path):
    config = small_config(tmp_path)
    cfgrl("base", tmp_path / "b", "--demo-episodes", "4", "--base-steps", "2", "-c", config, cwd=tmp_path)
    base = tmp_path / "b" / "base" / "policy"
    demos = tmp_path / "b" / "demos.zarr"
    cfgrl("round", tmp_path / "rounds", "--policy", base, "--rounds", "2", "--keep-stores", "1", "--with-store", demos,
          "-c", config, cwd=tmp_path)
    first = json.loads((tmp_path / "rounds" / "round_001" / "round.json").read_text())
    second = json.loads((tmp_path / "rounds" / "round_002" / "round.json").read_text())
    base_id = json.loads((base / "config.json").read_text())["policy_id"]
    assert first["policy_in_id"] == base_id and first["collect_cfg_scale"] == 1.0
    assert second["policy_in_id"] == first["policy_out_id"] != base_id
    assert second["collect_cfg_scale"] == first["chosen_cfg_scale"]
    chosen = json.loads((Path(first["eval"]) / "results.json").read_text())["chosen_cfg_scale"]
    assert first["chosen_cfg_scale"] == chosen and first["chosen_on"].startswith("validation")
    assert first["stores"] == [str(tmp_path / "rounds" / "round_001" / "rollouts.zarr"), str(demos)]
    assert second["stores"] == [str(tmp_path / "rounds" / "round_002" / "rollouts.zarr"), first["stores"][0], str(demos)]
    windows = pd.read_parquet(Path(second["label_version"]) / "windows.parquet")
    assert windows.store.nunique() == 3  # the demonstrations are labelled (and trained on) beside the rollouts
    from cfgrl.store import Store

    assert set(Store(first["stores"][0]).episodes.policy_id) == {base_id}
    assert set(Store(second["stores"][0]).episodes.policy_id) == {first["policy_out_id"]}
    assert set(Store(second["stores"][0]).episodes.cfg_scale) == {second["collect_cfg_scale"]}
    # Round 2's baseline is round 1's policy run as it collected, at its chosen w, not unguided.
    results = json.loads((Path(second["eval"]) / "results.json").read_text())
    assert results["baseline_cfg_scale"] == second["collect_cfg_scale"]
    assert {r["cfg_scale"] for r in results["rows"] if r["arm"] == "baseline"} == {second["collect_cfg_scale"]}
    shown = cfgrl("inspect", tmp_path / "rounds", cwd=tmp_path).stdout
    assert first["policy_out_id"] in shown and "round 2" in shown


def test_ablation_relabels_one_store_and_writes_a_table(tmp_path):
    config = small_config(tmp_path)
    cfgrl("base", tmp_path / "b", "--demo-episodes", "4", "--base-steps", "2", "-c", config, cwd=tmp_path)
    base = tmp_path / "b" / "base" / "policy"
    cfgrl("collect", tmp_path / "s.zarr", "--policy", base, "-c", config, cwd=tmp_path)
    cfgrl("ablate", tmp_path / "s.zarr", "--policy", base, "--out", tmp_path / "ab", "-c", config,
          "--grid", "cfgrl.dropout_prob=0.1,0.3", "--grid", "policy.condition_mode=token,bias", cwd=tmp_path)
    table = pd.read_csv(tmp_path / "ab" / "ablation.csv")
    assert list(table.setting) == ["default", "cfgrl.dropout_prob=0.3", "policy.condition_mode=bias"]
    assert table.label_version.nunique() == 2  # condition_mode reuses the default labels
    # paired against the defaults on the same test episodes: the difference of the two success rates
    default = table.iloc[0]
    assert pd.isna(default.diff_vs_default)
    for row in table.iloc[1:].itertuples():
        assert row.diff_vs_default == pytest.approx(row.success - default.success)
        assert row.diff_ci_low <= row.diff_vs_default <= row.diff_ci_high
    assert (tmp_path / "ab" / "ablation.png").stat().st_size > 0
    from cfgrl.store import Store

    assert Store(tmp_path / "s.zarr").num_episodes == 4  # relabelled, never re-collected


def test_reduced_demo_writes_its_report(tmp_path):
    config = small_config(tmp_path, evaluate={"cfg_scales": [1.0]})
    demo = ("demo", tmp_path / "demo", "--demo-episodes", "4", "--base-steps", "2", "--one-round", "--keep-demos", "-c", config)
    cfgrl(*demo, cwd=tmp_path)
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Round 1" in report and "filtered_bc" in report and "weighted" in report
    assert "trains on the base's demonstrations too" in report
    stores = json.loads((tmp_path / "demo" / "report.json").read_text())["round_1"]["stores"]
    assert stores == [str(tmp_path / "demo" / "rounds" / "round_001" / "rollouts.zarr"), str(tmp_path / "demo" / "demos.zarr")]
    assert "minus each baseline" in report
    # Round 1 minus the base, paired on the same test episodes: the difference of their test rates.
    record = json.loads((tmp_path / "demo" / "report.json").read_text())
    rows = {r["arm"]: r for r in overall_rows(load_results(record["round_1"]["eval"]))}
    chosen = rows[f"w={record['round_1']['chosen_cfg_scale']:g}"]
    diff, low, high = record["rounds_minus_base"]["round_1"]
    assert diff == pytest.approx(chosen["success_rate"] - rows["baseline"]["success_rate"]) and low <= diff <= high
    assert "- round 1: " in report.split("## Against the base")[1]
    assert (tmp_path / "demo" / "comparison.png").stat().st_size > 0
    timings = json.loads((tmp_path / "demo" / "report.json").read_text())["timings_s"]
    assert set(timings) >= {"base policy (scripted demos, BC)", "round 1 (collect, label, train, evaluate)"}
    # A rerun skips finished work and repeats no round (it used to run a second round).
    first = json.loads((tmp_path / "demo" / "report.json").read_text())
    cfgrl(*demo, cwd=tmp_path)
    assert not (tmp_path / "demo" / "rounds" / "round_002").exists()
    again = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert (again["round_1"], again["baselines"]) == (first["round_1"], first["baselines"])
    # The rerun ran nothing: every step keeps the time it took when it ran, and the report says so.
    assert first["reused_steps"] == [] and again["reused_steps"] == list(first["timings_s"])
    assert again["timings_s"] == first["timings_s"]
    assert "(reused: timed when an earlier run ran it)" in (tmp_path / "demo" / "report.md").read_text()


def test_the_base_imitates_failed_demonstrations_whatever_the_recipe_drops(tmp_path):
    """configs/metaworld.yaml leaves failed episodes out of fine-tuning; the base it starts from still
    imitates every demonstration (at NOISE 1 none succeeds: dropping them would leave nothing)."""
    config = small_config(tmp_path, cfgrl={"failed_episodes": "drop"})
    cfgrl("base", tmp_path, "--demo-noise", "1", "--demo-episodes", "2", "--base-steps", "1", "-c", config, cwd=tmp_path)
    from cfgrl.store import Store

    assert not Store(tmp_path / "demos.zarr").episodes.success.any()
    manifest = json.loads(next((tmp_path / "demos.labels").glob("*/manifest.json")).read_text())
    assert "failed_episodes" not in manifest["settings"] and (tmp_path / "base" / "policy" / "config.json").is_file()


def test_the_recipe_study_builds_a_capacity_base_as_its_base_was_built(tmp_path):
    """scripts/metaworld_study.py: a `small` arm starts from a `small` base, behaviour-cloned on the study
    base's demonstrations with the steps and learning rate that base's run recorded."""
    import importlib.util

    from cfgrl.config import load_config

    config = small_config(tmp_path)
    cfgrl("base", tmp_path, "--demo-episodes", "4", "--base-steps", "2", "--base-lr", "0.002", "-c", config, cwd=tmp_path)
    spec = importlib.util.spec_from_file_location("metaworld_study", REPO / "scripts" / "metaworld_study.py")
    study = importlib.util.module_from_spec(spec)
    sys.modules["metaworld_study"] = study  # a dataclass looks its module up there
    spec.loader.exec_module(study)
    policy = study.build_base(load_config(config), tmp_path, "small")
    assert policy == tmp_path / "small" / "base" / "policy" and (policy / "config.json").is_file()
    run = json.loads((policy.parent / "config.json").read_text())
    assert (run["policy"]["preset"], run["train"]["steps"], run["train"]["lr"]) == ("small", 2, 0.002)
    assert json.loads((policy / "config.json").read_text())["config"]["expert_width"] == 128  # small's, not tiny's 64
    assert (tmp_path / "small" / "base.labels").is_dir()  # the study's demonstrations are only read


@pytest.mark.metaworld
def test_reduced_demo_runs_on_metaworld(tmp_path):
    """The demonstration on the real Meta-World simulator (one MT1 task, short episodes): the base
    imitates Meta-World's own expert, both rounds and both baselines run, the report names the env."""
    config = small_config(tmp_path, env={"name": "metaworld", "suite": "push-v3", "benchmark_seed": 3, "image_size": 32,
                                         "tasks": None, "init_states": [20, 21], "max_steps": 30},
                          evaluate={"cfg_scales": [1.0, 2.0], "init_states": [0], "validation_init_states": [10]})
    cfgrl("demo", tmp_path / "demo", "--demo-episodes", "2", "--base-steps", "2", "-c", config, cwd=tmp_path)
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["env"] == "Meta-World push-v3"
    assert (tmp_path / "demo" / "report.md").read_text().startswith("# CFGRL demonstration on Meta-World push-v3")
    second = report["round_2"]
    assert set(report["rounds_minus_base"]) == {"round_1", "round_2"}
    assert second["policy_in_id"] == report["round_1"]["policy_out_id"]
    assert set(report["baselines"]) == {"filtered_bc", "weighted"}
    from cfgrl.store import Store

    assert set(Store(tmp_path / "demo" / "demos.zarr").episodes.policy_id) == {"scripted-noise0.30"}  # Meta-World's expert
    assert set(Store(second["stores"][0]).episodes.policy_id) == {report["round_1"]["policy_out_id"]}


def test_round_without_validation_init_states_is_refused_before_any_work(tmp_path):
    config = small_config(tmp_path, evaluate={"validation_init_states": None})
    result = subprocess.run([str(VENV / "bin" / "cfgrl"), "round", str(tmp_path / "rounds"), "--policy", "scripted:0.1",
                             "-c", str(config)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "chooses the guidance weight on validation init states" in result.stderr
    assert not (tmp_path / "rounds").exists()
    result = subprocess.run([str(VENV / "bin" / "cfgrl"), "round", str(tmp_path / "rounds"), "--policy", "scripted:0.1",
                             "--with-store", str(tmp_path / "nothing.zarr"), "-c", str(small_config(tmp_path))],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "nothing.zarr" in result.stderr
    assert not (tmp_path / "rounds").exists()


def test_spread_repeats_the_comparison_over_seeds_from_one_base(tmp_path):
    config = small_config(tmp_path)
    cfgrl("base", tmp_path / "b", "--demo-episodes", "4", "--base-steps", "2", "-c", config, cwd=tmp_path)
    base = tmp_path / "b" / "base" / "policy"
    cfgrl("spread", tmp_path / "spread", "--policy", base, "--seeds", "0,1", "-c", config, cwd=tmp_path)
    report = json.loads((tmp_path / "spread" / "report.json").read_text())
    rows = report["per_seed"]
    assert list(rows) == ["0", "1"] and set(report["summary"]) == {"base", "cfgrl", "filtered_bc", "weighted"}
    assert rows["0"]["base"] == rows["1"]["base"]  # one base, the same test episodes
    from cfgrl.store import Store

    stores = [Store(tmp_path / "spread" / f"seed_{s}" / "rounds" / "round_001" / "rollouts.zarr").episodes for s in (0, 1)]
    assert set(stores[0].seed).isdisjoint(stores[1].seed)  # each seed collected its own rollouts
    assert "| mean |" in (tmp_path / "spread" / "report.md").read_text()
    for row in rows.values():  # paired on the same test episodes: the difference of the two success rates
        for arm in ("filtered_bc", "weighted"):
            diff, low, high = row["cfgrl_minus"][arm]
            assert diff == pytest.approx(row["cfgrl"] - row[arm]) and low <= diff <= high
