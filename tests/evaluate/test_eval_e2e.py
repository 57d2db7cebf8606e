"""A real tiny PI0 evaluated on the built-in env: paired episodes across w, the files, resume, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import config_from_dict, load_config
from cfgrl.evaluate import evaluate_policy, load_results
from cfgrl.evaluate import rollouts
from cfgrl.evaluate.ledger import EpisodeLedger
from cfgrl.store import Store

from eval_helpers import SETTINGS, WS

pytestmark = pytest.mark.slow


def test_real_policy_at_two_weights_writes_every_file(evaluated):
    results, run, _ = evaluated
    for name in ("results.json", "results.csv", "success_vs_w.png", "config.json", "episodes.jsonl"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "success_vs_w.png").read_bytes().startswith(b"\x89PNG")
    assert load_results(run) == results
    assert config_from_dict(json.loads((run / "config.json").read_text())).evaluate.cfg_scales == WS
    overall = {r["arm"]: r for r in results["rows"] if r["scope"] == "overall" and r["split"] == "test"}
    assert list(overall) == ["w=1", "w=2", "baseline"]
    assert all(r["episodes"] == 2 for r in overall.values())
    assert overall["w=2"]["diff_vs_w1"] is not None and overall["w=1"]["diff_vs_w1"] is None
    validation = {r["arm"]: r for r in results["rows"] if r["scope"] == "overall" and r["split"] == "validation"}
    assert list(validation) == ["w=1", "w=2"]  # the baseline is not chosen, so it runs no validation
    best = max(validation.values(), key=lambda r: (r["success_rate"], r["ci_low"], -r["cfg_scale"]))
    assert results["chosen_cfg_scale"] == best["cfg_scale"]
    assert results["validation"] == {"episodes_per_w": 2, "init_states": [5], "shares_test_init_states": False}
    tasks = [r for r in results["rows"] if r["arm"] == "w=2" and r["scope"] == "task" and r["split"] == "test"]
    assert [(r["task_id"], r["prompt"]) for r in tasks] == [(0, "grasp the top left ball"), (1, "grasp the top right ball")]
    assert len(EpisodeLedger(run / "episodes.jsonl").records) == 10  # 2 w x (2 test + 2 validation) + 2 baseline


def test_every_w_ran_the_same_init_states_and_seeds(evaluated):
    """Read back from the store: same (task, init, seed) for every w, identical first states (same
    env seed), different actions (guidance is applied), one run id and separate groups per w."""
    _, _, store_path = evaluated
    store = Store(store_path)
    ep = store.episodes
    assert len(ep) == 10 and sorted(set(ep.cfg_scale)) == [0.0, 1.0, 2.0]
    assert ep[ep.init_state_id == 5].run_id.nunique() == 2  # validation episodes: a run of their own per w
    ep = ep[ep.init_state_id == 4]  # the test episodes
    per_w = {w: ep[(ep.cfg_scale == w) & (ep.policy_id == ep.policy_id[ep.cfg_scale == 1.0].iloc[0])] for w in WS}
    slots = {w: sorted(zip(d.task_id, d.init_state_id, d.seed)) for w, d in per_w.items()}
    assert slots[1.0] == slots[2.0]
    assert per_w[1.0].run_id.nunique() == 1 and per_w[1.0].run_id.iloc[0] != per_w[2.0].run_id.iloc[0]
    assert not set(per_w[1.0].group_id) & set(per_w[2.0].group_id)
    differs = []
    for (_, a), (_, b) in zip(per_w[1.0].sort_values("seed").iterrows(), per_w[2.0].sort_values("seed").iterrows()):
        first_a = store.steps("state")[a.step_start]
        first_b = store.steps("state")[b.step_start]
        np.testing.assert_array_equal(first_a, first_b)
        acts_a = store.steps("action")[a.step_start : a.step_start + a.length]
        acts_b = store.steps("action")[b.step_start : b.step_start + b.length]
        differs.append(not np.allclose(acts_a, acts_b))
    assert any(differs)


def test_an_interrupted_evaluation_resumes_without_rerunning_or_duplicating(evaluated, checkpoints, tmp_path, monkeypatch):
    reference, _, _ = evaluated
    policy, _ = checkpoints
    cfg = load_config(None, SETTINGS, environ={})
    run, store = tmp_path / "run", tmp_path / "eval.zarr"

    real_append, calls = EpisodeLedger.append, []

    def crash_on_second(self, record):
        calls.append(record["key"])
        if len(calls) == 2:  # the 2nd episode is already in the store; the process dies before logging it
            raise KeyboardInterrupt
        real_append(self, record)

    monkeypatch.setattr(EpisodeLedger, "append", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate_policy(cfg, policy, run, store=store, progress=False)
    monkeypatch.setattr(EpisodeLedger, "append", real_append)
    assert len(EpisodeLedger(run / "episodes.jsonl").records) == 1
    assert Store(store).num_episodes == 2

    rolled = []
    real_run = rollouts.run_episodes
    monkeypatch.setattr(rollouts, "run_episodes", lambda env_cfg, policy, specs, *a, **k: rolled.extend(specs) or real_run(env_cfg, policy, specs, *a, **k))
    resumed = evaluate_policy(cfg, policy, run, store=store, progress=False)
    assert len(rolled) == 6  # w=1's validation and all of w=2: w=1's first test episode was logged, its second healed from the store
    assert Store(store).num_episodes == 8  # no duplicate of the episode the crash left in the store
    assert len(EpisodeLedger(run / "episodes.jsonl").records) == 8
    policy_rows = lambda res: [{k: r[k] for k in ("arm", "scope", "task_id", "successes", "episodes")}
                               for r in res["rows"] if r["role"] == "policy"]
    assert policy_rows(resumed) == policy_rows(reference)


def _cli(args, env=None):
    return CliRunner().invoke(app, ["evaluate", *args], env=env)


def test_cli_prints_the_table_and_chosen_w_and_honours_pi0_cfg_scale(evaluated, checkpoints, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated[1], run)  # rewritten below; other tests compare against the shared run
    policy, _ = checkpoints
    overrides = [x for s in SETTINGS if not s.startswith("evaluate.cfg_scales") for x in ("-o", s)]
    result = _cli([str(policy), "--out", str(run), "--cfg-scales", "1,2", *overrides])
    assert result.exit_code == 0, result.output
    assert "chosen w =" in result.output and "w=2" in result.output
    # Only PI0_CFG_SCALE: that single w (already recorded in the run, so no rollout happens).
    result = _cli([str(policy), "--out", str(run), *overrides], env={"PI0_CFG_SCALE": "2"})
    assert result.exit_code == 0, result.output
    assert load_results(run)["cfg_scales"] == [2.0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cfg-scales", ""], "empty"),
        (["--cfg-scales", "1,-2"], ">= 0"),
        (["--cfg-scales", "nan"], "finite numbers >= 0"),
        (["--cfg-scales", "1,inf"], "finite numbers >= 0"),
        (["-o", "evaluate.cfg_scales=[1, .nan]"], "finite numbers >= 0"),
        (["--shard", "2", "--num-shards", "2"], "--shard 2 --num-shards 2 is not valid"),
        (["--shard", "0"], "--shard and --num-shards go together"),
        (["-o", "evaluate.cfg_scales=[]"], "empty"),
        (["--suite", "nope"], "not a builtin suite"),
        (["-o", "env.tasks=[9]"], "task 9 is not in suite"),
        (["-o", "env.init_states=[]"], "zero episodes"),
        (["-o", "evaluate.episodes_per_init=0"], "zero episodes"),
        (["-o", "evaluate.init_states=[0]", "-o", "evaluate.validation_init_states=[0, 1]"], "validation_init_states shares 1 init states"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(checkpoints, tmp_path, extra, message):
    policy, _ = checkpoints
    result = _cli([str(policy), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s.zarr"), "-o", "env.image_size=32", *extra])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert list(tmp_path.iterdir()) == []  # neither the run directory nor the store


def test_cli_refuses_a_checkpoint_that_is_not_a_policy(evaluated, tmp_path):
    _, run, store = evaluated
    before = (run / "results.json").read_bytes()
    for not_a_policy in (store, tmp_path, tmp_path / "missing"):
        result = _cli([str(not_a_policy), "--out", str(run)])
        assert result.exit_code == 2
        assert result.output.strip().startswith("error:") and "is not a policy checkpoint" in result.output
    assert (run / "results.json").read_bytes() == before  # nothing already written is touched


def test_cli_refuses_a_checkpoint_that_does_not_fit_the_env_before_writing(tmp_path):
    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset("tiny", image_size=32, patch_size=8, camera_names=("front",))
    wrong = PI0Policy(config, stats=NormStats.identity(8, 7)).save_pretrained(tmp_path / "p")
    result = _cli([str(wrong), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s.zarr"),
                   "-o", "env.image_size=32", "-o", "env.tasks=[0]", "-o", "env.init_states=[0]"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "has no camera" in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "s.zarr").exists()


def test_cli_refuses_a_policy_or_baseline_without_stats_before_writing(checkpoints, tmp_path):
    policy, _ = checkpoints
    bare = tmp_path / "bare"
    shutil.copytree(policy, bare)
    (bare / "stats.json").unlink()  # as a policy that never had stats is saved
    for args in ([str(bare)], [str(policy), "--baseline", str(bare)]):
        result = _cli([*args, "--out", str(tmp_path / "run"), "-o", "env.image_size=32"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "carries no normalisation stats" in lines[0] and "--stats store" in lines[0], result.output
        assert not (tmp_path / "run").exists()


def test_cli_refuses_validation_init_states_inside_the_default_test_set(checkpoints, tmp_path):
    """With evaluate.init_states and env.init_states left null, the test slots are every init state:
    validation init states among them are refused, not reported as disjoint."""
    policy, _ = checkpoints
    result = _cli([str(policy), "--out", str(tmp_path / "run"), "-o", "env.image_size=32", "-o", "env.tasks=[0]",
                   "-o", "evaluate.validation_init_states=[40, 41]", "-o", "evaluate.cfg_scales=[1, 2]"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "validation init states meet the test init states in 2" in lines[0] and "reach task 0 init 40" in lines[0]
    assert list(tmp_path.iterdir()) == []
