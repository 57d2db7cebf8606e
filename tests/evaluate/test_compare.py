"""`cfgrl compare`: two evaluations paired on the test episodes both ran."""

import json

import pytest

from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.compare import compare_evaluations
from cfgrl.evaluate.plan import settings_digest
from cfgrl.schemas import EVAL_RESULTS


def write_eval(path, chosen, outcomes, seeds=None, baseline=None, overrides=(), checkpoint="ckpt", stale=None):
    """An evaluation directory as evaluate writes it: results.json with its chosen w, its configuration
    (``overrides``) and its plan's keys, and the episode log of ``outcomes`` {w: [success per init state]} on
    test (plus one validation episode, never paired); ``baseline``: (w, [success per init state]) of a
    baseline arm; ``stale``: {w: [success per init state]} an earlier plan (another checkpoint) left in the log."""
    path.mkdir()
    cfg = load_config(None, list(overrides))
    settings = settings_digest(cfg)
    checkpoints = {"policy": checkpoint, **({"baseline": "base"} if baseline else {})}
    meta = {"chosen_cfg_scale": chosen, "baseline_cfg_scale": baseline[0] if baseline else None, "config": cfg.to_dict(),
            "checkpoints": checkpoints, "settings_digest": settings}
    (path / "results.json").write_text(json.dumps({**EVAL_RESULTS.stamp(), **meta, "rows": [], "out_dir": str(path)}))
    lines = [{"kind": "episodes", **EVAL_RESULTS.stamp()}]
    arms = [("policy", checkpoint, w, successes) for w, successes in outcomes.items()]
    arms += [("baseline", "base", *baseline)] if baseline else []
    arms += [("policy", "earlier", w, successes) for w, successes in (stale or {}).items()]
    for role, ckpt, w, successes in arms:
        for i, ok in enumerate(successes):
            seed = (seeds or {}).get(i, 100 + i)
            lines.append({"key": f"{ckpt}|{settings}|{role}|w={w}|{i}", "checkpoint": ckpt, "role": role, "cfg_scale": w,
                          "split": "test", "suite": "s", "task_id": 0, "init_state_id": i, "repeat": 0, "seed": seed, "success": ok})
        lines.append({"key": f"{ckpt}|{settings}|{role}|w={w}|val", "checkpoint": ckpt, "role": "policy", "cfg_scale": w,
                      "split": "validation", "suite": "s", "task_id": 0, "init_state_id": 99, "repeat": 0, "seed": 7, "success": True})
    (path / "episodes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_pairs_each_side_at_its_chosen_w(tmp_path):
    a = write_eval(tmp_path / "a", 2.0, {1.0: [False] * 4, 2.0: [True, True, True, False]})
    b = write_eval(tmp_path / "b", 1.0, {1.0: [True, False, False, False], 2.0: [True] * 4})
    c = compare_evaluations(a, b)
    assert (c.a_cfg_scale, c.b_cfg_scale) == (2.0, 1.0)
    d = c.difference
    assert (d.n, d.both, d.only_a, d.only_b, d.neither) == (4, 1, 2, 0, 1)
    assert d.diff == pytest.approx(0.5) and d.low < 0.5 < d.high
    assert compare_evaluations(a, b, a_cfg_scale=1.0, b_cfg_scale=2.0).difference.diff == pytest.approx(-1.0)
    assert "+50.0%" in c.describe() and "4 paired test episodes" in c.describe()


def test_refuses_unpaired_or_missing_arms(tmp_path):
    a = write_eval(tmp_path / "a", 1.0, {1.0: [True, False]})
    other_seed = write_eval(tmp_path / "b", 1.0, {1.0: [True, False]}, seeds={1: 5})
    with pytest.raises(CfgrlError, match="different test episodes.*1 only in the first, 1 only in the second"):
        compare_evaluations(a, other_seed)
    with pytest.raises(CfgrlError, match="no test episode at w=3"):
        compare_evaluations(a, a, b_cfg_scale=3.0)
    unchosen = write_eval(tmp_path / "c", None, {1.0: [True, False]})
    with pytest.raises(CfgrlError, match="chosen on validation"):
        compare_evaluations(unchosen, a)


def test_b_can_be_an_evaluations_baseline_arm(tmp_path):
    # The baseline ran at w=0 and succeeded where the policy's w=0 arm did not: the baseline arm is taken.
    a = write_eval(tmp_path / "a", 2.0, {0.0: [False] * 4, 2.0: [True, True, True, False]},
                   baseline=(0.0, [True, False, False, False]))
    c = compare_evaluations(a, a, b_baseline=True)
    assert (c.a_cfg_scale, c.b_cfg_scale) == (2.0, 0.0) and c.difference.diff == pytest.approx(0.5)
    assert "a's baseline (w=0)" in c.describe()
    with pytest.raises(CfgrlError, match="--w-b and --b-baseline"):
        compare_evaluations(a, a, b_cfg_scale=0.0, b_baseline=True)
    no_baseline = write_eval(tmp_path / "b", 2.0, {2.0: [True] * 4})
    with pytest.raises(CfgrlError, match="ran no baseline arm"):
        compare_evaluations(a, no_baseline, b_baseline=True)


@pytest.mark.parametrize("override, key", [("env.max_steps=50", "env.max_steps (20, 50)"),
                                           ("inference.num_steps=4", "inference.num_steps (10, 4)"),
                                           ("env.benchmark_seed=3", "env.benchmark_seed (default, 3)")])
def test_refuses_evaluations_of_other_outcome_changing_settings(tmp_path, override, key):
    a = write_eval(tmp_path / "a", 1.0, {1.0: [True, False]}, overrides=["env.max_steps=20"])
    b_overrides = ["env.max_steps=20", override] if not override.startswith("env.max_steps") else [override]
    b = write_eval(tmp_path / "b", 1.0, {1.0: [True, False]}, overrides=b_overrides)
    with pytest.raises(CfgrlError, match="other outcome-changing settings") as err:
        compare_evaluations(a, b)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_pairs_only_the_episodes_of_each_evaluation_s_own_plan(tmp_path):
    # the log also holds an earlier checkpoint's episodes at the same w and slots: they never pair
    a = write_eval(tmp_path / "a", 1.0, {1.0: [True, True, False, False]}, stale={1.0: [False] * 4})
    b = write_eval(tmp_path / "b", 1.0, {1.0: [False] * 4})
    d = compare_evaluations(a, b).difference
    assert d.n == 4 and d.diff == pytest.approx(0.5)


def test_results_written_before_the_plan_keys_pair_when_one_checkpoint_ran(tmp_path):
    def older(path):  # results.json as evaluate wrote it before it recorded its plan's keys
        results = json.loads((path / "results.json").read_text())
        del results["checkpoints"], results["settings_digest"]
        (path / "results.json").write_text(json.dumps(results))
        return path

    a = older(write_eval(tmp_path / "a", 1.0, {1.0: [True, True, False, False]}))
    b = write_eval(tmp_path / "b", 1.0, {1.0: [False] * 4})
    assert compare_evaluations(a, b).difference.diff == pytest.approx(0.5)
    mixed = older(write_eval(tmp_path / "c", 1.0, {1.0: [True] * 4}, stale={1.0: [False] * 4}))
    with pytest.raises(CfgrlError, match="holds 2 checkpoints for its policy .* run its evaluate command again"):
        compare_evaluations(mixed, b)
