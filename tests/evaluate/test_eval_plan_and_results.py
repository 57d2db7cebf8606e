"""The paired design, the episode log, the results table and the plot, without rollouts."""

import json

import pytest

from cfgrl.config import load_config
from cfgrl.envs.base import TaskInfo
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.cli import apply_env_cfg_scale, parse_cfg_scales
from cfgrl.evaluate.ledger import EpisodeLedger, checkpoint_fingerprint
from cfgrl.evaluate.plan import (
    BASELINE, POLICY, TEST, VALIDATION, check_protocol, make_plan, plan_episodes, require_validation, slots_for_suite,
)
from cfgrl.evaluate.runner import merge_shards, write_run
from cfgrl.evaluate.shards import manifest, write_manifest
from cfgrl.evaluate.plot import plot_success_vs_w
from cfgrl.evaluate.summary import build_results, chosen_cfg_scale, format_table, load_results, summarise, write_results
from cfgrl.evaluate.stats import wilson_interval

TASKS = [TaskInfo(0, "grasp the red ball", 50, 80), TaskInfo(1, "grasp the green ball", 50, 80)]


def cfg(*overrides):
    return load_config(None, list(overrides), environ={})


def test_every_w_and_the_baseline_run_the_same_slots_and_seeds():
    c = cfg("env.init_states=[3, 7]", "evaluate.episodes_per_init=2")
    slots = slots_for_suite(c.env, TASKS, c)
    assert len(slots) == 2 * 2 * 2
    episodes = plan_episodes(slots, [0.0, 1.0, 2.5, 1.0], baseline_cfg_scale=0.0)
    by_arm = {}
    for ep in episodes:
        by_arm.setdefault((ep.role, ep.cfg_scale), []).append(ep.slot)
    assert list(by_arm) == [(POLICY, 0.0), (POLICY, 1.0), (POLICY, 2.5), (BASELINE, 0.0)]  # duplicates dropped
    assert all(arm_slots == slots for arm_slots in by_arm.values())
    seeds = [s.seed for s in slots]
    assert len(set(seeds)) == len(seeds)  # repeats of one init state get different seeds
    trained_baseline = plan_episodes(slots, [1.0], baseline_cfg_scale=3.0)  # a previous round's policy at its chosen w
    assert {(ep.role, ep.cfg_scale) for ep in trained_baseline} == {(POLICY, 1.0), (BASELINE, 3.0)}


def test_seeds_depend_on_the_evaluation_seed_only_not_on_the_selection():
    a = slots_for_suite(cfg("env.tasks=[0, 1]", "env.init_states=[5]").env, TASKS, cfg())
    b = slots_for_suite(cfg("env.tasks=[1]", "env.init_states=[5]").env, TASKS, cfg())
    assert b[0].seed == a[1].seed  # task 1, init 5 keeps its seed when task 0 is dropped
    c = cfg("env.tasks=[1]", "env.init_states=[5]", "evaluate.seed=7")
    assert slots_for_suite(c.env, TASKS, c)[0].seed != b[0].seed


def test_default_init_states_are_all_of_the_suite():
    c = cfg()
    assert len(slots_for_suite(c.env, TASKS, c)) == 2 * 50


def test_evaluate_init_states_hold_out_from_the_collection_ones():
    c = cfg("env.init_states=[0, 1, 2]", "evaluate.init_states=[48, 49]")
    assert sorted({s.init_state_id for s in slots_for_suite(c.env, TASKS, c)}) == [48, 49]
    c = cfg("evaluate.init_states=[50]")
    with pytest.raises(CfgrlError, match="init state 50 is out of range"):
        slots_for_suite(c.env, TASKS, c)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.tasks=[9]"], "task 9 is not in suite 'reach'"),
        (["env.init_states=[50]"], "init state 50 is out of range"),
        (["env.tasks=[]"], "zero episodes"),
        (["env.init_states=[]"], "zero episodes"),
    ],
)
def test_bad_selection_is_one_clear_error(overrides, message):
    c = cfg(*overrides)
    with pytest.raises(CfgrlError, match=message):
        slots_for_suite(c.env, TASKS, c)


def test_zero_episodes_per_init_and_libero_protocol_conflicts_are_errors():
    with pytest.raises(CfgrlError, match="zero episodes"):
        check_protocol(cfg("evaluate.episodes_per_init=0"))
    with pytest.raises(CfgrlError, match="protocol=libero"):
        check_protocol(cfg("evaluate.protocol=libero", "env.tasks=[0]"))
    with pytest.raises(CfgrlError, match="protocol=libero"):
        check_protocol(cfg("evaluate.protocol=libero", "evaluate.init_states=[1]"))
    check_protocol(cfg("evaluate.protocol=libero"))
    check_protocol(cfg("evaluate.protocol=libero", "env.init_states=[100-199]", "evaluate.validation_init_states=[50-99]"))
    for key in ("evaluate.validation_init_states", "env.init_states"):
        with pytest.raises(CfgrlError, match=f"fixed init states 0..49, and {key} holds 2 of them \\(first 1\\)"):
            check_protocol(cfg("evaluate.protocol=libero", f"{key}=[1, 49, 50]"))


@pytest.mark.parametrize("overrides, shared", [
    (["evaluate.init_states=[0, 1]", "evaluate.validation_init_states=[1, 2]"], "evaluate.init_states"),
    (["env.init_states=[5-9]", "evaluate.init_states=[0, 1]", "evaluate.validation_init_states=[2, 9]"], "env.init_states"),
])
def test_validation_init_states_must_be_disjoint_from_training_and_test(overrides, shared):
    with pytest.raises(CfgrlError, match=f"validation_init_states shares 1 init states with {shared}"):
        check_protocol(cfg(*overrides))


def test_validation_slots_run_for_the_policy_only_on_their_own_init_states():
    c = cfg("env.init_states=[10-20]", "evaluate.init_states=[0, 1]", "evaluate.validation_init_states=[2, 3, 4]")
    slots = slots_for_suite(c.env, TASKS, c)
    test = [s for s in slots if s.split == TEST]
    validation = [s for s in slots if s.split == VALIDATION]
    assert {s.init_state_id for s in test} == {0, 1} and {s.init_state_id for s in validation} == {2, 3, 4}
    episodes = plan_episodes(slots, [1.0, 2.0], baseline_cfg_scale=0.0)
    assert {ep.slot.split for ep in episodes if ep.role == BASELINE} == {TEST}
    assert sum(ep.role == POLICY and ep.slot.split == VALIDATION for ep in episodes) == 2 * len(validation)
    one_w = cfg("evaluate.init_states=[0, 1]", "evaluate.validation_init_states=[2, 3]", "evaluate.cfg_scales=[1.0]")
    assert all(s.split == TEST for s in slots_for_suite(one_w.env, TASKS, one_w))  # nothing to choose


def test_libero_protocol_tests_on_the_fixed_init_states_and_validates_on_drawn_layouts():
    tasks = [TaskInfo(0, "put the bowl on the plate", 50, 220, drawn_init_states=999_950)]
    c = cfg("evaluate.protocol=libero", "env.init_states=[100-109]")  # training layouts: neither test nor validation
    slots = slots_for_suite(c.env, tasks, c)
    assert sorted(s.init_state_id for s in slots if s.split == TEST) == list(range(50))
    assert sorted(s.init_state_id for s in slots if s.split == VALIDATION) == list(range(50, 100))
    chosen = cfg("evaluate.protocol=libero", "evaluate.validation_init_states=[60, 61]")
    assert sorted(s.init_state_id for s in slots_for_suite(chosen.env, tasks, chosen) if s.split == VALIDATION) == [60, 61]
    with pytest.raises(CfgrlError, match="init state 1000000 is out of range .* drawn layouts 50..999999"):
        bad = cfg("evaluate.protocol=libero", "evaluate.validation_init_states=[1000000]")
        slots_for_suite(bad.env, tasks, bad)


def test_a_choice_of_w_without_validation_is_refused_where_w_is_chosen():
    with pytest.raises(CfgrlError, match="cfgrl round chooses the guidance weight on validation init states"):
        require_validation(cfg("evaluate.cfg_scales=[1, 2]"), "cfgrl round")
    require_validation(cfg("evaluate.cfg_scales=[1]"), "cfgrl round")  # nothing to choose
    require_validation(cfg("evaluate.validation_init_states=[0]", "env.init_states=[1-9]"), "cfgrl round")


def test_cfg_scale_lists_from_the_command_line_and_the_environment():
    assert parse_cfg_scales("0, 1,1.5") == [0.0, 1.0, 1.5]
    for bad, message in [("", "empty"), (" , ", "empty"), ("0,-1", ">= 0"), ("a,b", "not a comma-separated")]:
        with pytest.raises(CfgrlError, match=message):
            parse_cfg_scales(bad)
    with pytest.raises(CfgrlError, match="empty"):
        cfg("evaluate.cfg_scales=[]")
    env = {"PI0_CFG_SCALE": "2.5"}
    c = load_config(None, [], environ=env)
    assert apply_env_cfg_scale(c, listed_on_command_line=False, environ=env).evaluate.cfg_scales == [2.5]
    c = load_config(None, ["evaluate.cfg_scales=[0, 1]"], environ=env)
    assert apply_env_cfg_scale(c, listed_on_command_line=True, environ=env).evaluate.cfg_scales == [0.0, 1.0]
    c = load_config(None, [], environ={})
    assert apply_env_cfg_scale(c, listed_on_command_line=False, environ={}).evaluate.cfg_scales == [0.0, 1.0, 1.5, 2.0, 3.0]


def _outcomes(slots, table):
    """table: arm -> list of 0/1 per slot."""
    out = {}
    for (role, w), flags in table.items():
        for ep, ok in zip(plan_episodes(slots, [w], None) if role == POLICY else plan_episodes(slots, [], w), flags):
            out[ep] = bool(ok)
    return out


def _results(validation=None):
    """Test slots: 2 tasks x init states 0-4; validation slots (with ``validation``: w -> 0/1 per
    slot) on init states 5-9."""
    c = cfg("evaluate.init_states=[0-4]", *(["evaluate.validation_init_states=[5-9]"] if validation else []))
    slots = slots_for_suite(c.env, TASKS, c)  # test: task 0 then task 1, 5 init states each; then validation
    table = {
        (POLICY, 0.0): [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        (POLICY, 1.0): [1, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        (POLICY, 2.0): [1, 1, 1, 1, 0, 1, 1, 0, 0, 0],
        (BASELINE, 0.0): [1, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    }
    outcomes = _outcomes([s for s in slots if s.split == TEST], table)
    if validation:
        outcomes.update(_outcomes([s for s in slots if s.split == VALIDATION], {(POLICY, w): v for w, v in validation.items()}))
    rows = summarise(outcomes, slots, list(table))
    return build_results(rows, {"policy": "p", "cfg_scales": [0.0, 1.0, 2.0], "out_dir": "eval"}), rows


def test_rows_hold_rates_wilson_intervals_and_paired_differences():
    results, rows = _results()
    get = {(r["arm"], r["scope"], r["task_id"]): r for r in rows}
    w2 = get[("w=2", "overall", None)]
    assert (w2["episodes"], w2["successes"], w2["success_rate"]) == (10, 6, 0.6)
    assert (w2["ci_low"], w2["ci_high"]) == pytest.approx(wilson_interval(6, 10))
    assert w2["diff_vs_w1"] == pytest.approx(0.3)  # 3 slots gained, none lost against w=1
    assert w2["diff_ci_low"] < 0.3 < w2["diff_ci_high"]
    assert get[("w=1", "overall", None)]["diff_vs_w1"] is None
    assert get[("w=2", "task", 0)]["successes"] == 4 and get[("w=2", "task", 1)]["successes"] == 2
    assert get[("w=2", "suite", None)]["successes"] == 6
    assert get[("baseline", "overall", None)]["diff_vs_w1"] == pytest.approx(-0.1)
    assert {r["split"] for r in rows} == {TEST}


def test_w_is_chosen_on_validation_never_on_the_test_rows_it_is_reported_on():
    results, _ = _results()
    assert results["chosen_cfg_scale"] is None  # w=2 is best on test, but no validation ran
    with pytest.raises(CfgrlError, match="ran none: set evaluate.validation_init_states"):
        chosen_cfg_scale(results, "cfgrl round")
    assert "no w chosen" in format_table(results)
    # Validation prefers w=1 although w=2 is best on test: the choice follows validation.
    results, rows = _results(validation={0.0: [0] * 10, 1.0: [1] * 6 + [0] * 4, 2.0: [1] * 3 + [0] * 7})
    assert chosen_cfg_scale(results, "test") == 1.0
    assert {r["arm"] for r in rows if r["split"] == VALIDATION} == {"w=0", "w=1", "w=2"}  # the baseline runs test only
    assert "* chosen w = 1" in format_table(results)


def test_the_choice_breaks_ties_towards_less_guidance():
    results, _ = _results(validation={0.0: [0] * 10, 1.0: [1] * 5 + [0] * 5, 2.0: [0] * 5 + [1] * 5})
    assert results["chosen_cfg_scale"] == 1.0


def test_results_files_round_trip_and_check_their_schema(tmp_path):
    results, rows = _results()
    write_results(results, tmp_path)
    assert load_results(tmp_path) == json.loads((tmp_path / "results.json").read_text())
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + len(rows) and csv[0].startswith("split,arm,role,cfg_scale,scope")
    broken = {**results, "schema_version": 99}
    (tmp_path / "results.json").write_text(json.dumps(broken))
    with pytest.raises(CfgrlError, match="schema version 99"):
        load_results(tmp_path)


def test_plot_is_written(tmp_path):
    results, _ = _results(validation={0.0: [0] * 10, 1.0: [1] * 10, 2.0: [1] * 10})
    path = plot_success_vs_w(results, tmp_path / "success_vs_w.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_plot_of_a_sweep_without_any_success(tmp_path):
    c = cfg("env.init_states=[0, 1, 2, 3, 4]")
    slots = slots_for_suite(c.env, TASKS, c)
    table = {(POLICY, 1.0): [0] * 10, (POLICY, 3.0): [0] * 10}
    results = build_results(summarise(_outcomes(slots, table), slots, list(table)), {"out_dir": "eval"})
    assert plot_success_vs_w(results, tmp_path / "p.png").stat().st_size > 10_000


def test_shards_merge_into_the_whole_plans_results_with_outcomes_that_differ(tmp_path):
    """Outcomes that vary by w, task and split (the end-to-end tiny policy fails every episode): three
    shard directories, written as a shard run writes them and given out of order, merge into the
    unsharded results, the validation-chosen w included."""
    c = cfg("evaluate.init_states=[0-4]", "evaluate.validation_init_states=[5-9]", "evaluate.cfg_scales=[0, 1, 2]")
    plan = make_plan(c, slots_for_suite(c.env, TASKS, c), 0.0, {POLICY: "p", BASELINE: "b"})
    records = {}
    for i, ep in enumerate(plan.episodes()):
        success = (i * 7919 + ep.slot.task_id) % 5 < 1 + 2 * ep.cfg_scale  # more success with w
        records[plan.key(ep)] = {"key": plan.key(ep), **ep.record_fields(), "success": success, "length": 10}
    meta = {"policy": "p", "store": None, "config": c.to_dict(), "out_dir": "whole"}
    (tmp_path / "whole").mkdir()
    whole = write_run(plan, records, meta, tmp_path / "whole")
    shard_dirs = []
    for i in range(3):
        shard_dirs.append(tmp_path / f"s{i}")
        shard_dirs[-1].mkdir()
        write_manifest(shard_dirs[-1], manifest(plan, i, 3, meta))
        EpisodeLedger(shard_dirs[-1] / "episodes.jsonl").extend([records[plan.key(ep)] for ep in plan.episodes(i, 3)])
    merged = merge_shards([shard_dirs[2], shard_dirs[0], shard_dirs[1]], tmp_path / "merged")
    assert merged["rows"] == whole["rows"] and merged["chosen_cfg_scale"] == whole["chosen_cfg_scale"] == 2.0
    assert 0 < sum(r["successes"] for r in whole["rows"] if r["scope"] == "overall") < sum(r["episodes"] for r in whole["rows"] if r["scope"] == "overall")
    assert (tmp_path / "merged" / "results.csv").read_bytes() == (tmp_path / "whole" / "results.csv").read_bytes()


def test_ledger_keeps_committed_episodes_and_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    ledger = EpisodeLedger(path)
    ledger.append({"key": "a", "success": True})
    ledger.append({"key": "b", "success": False})
    with path.open("a") as f:
        f.write('{"key": "c", "succ')  # a crash in the middle of a write
    reopened = EpisodeLedger(path)
    assert set(reopened.records) == {"a", "b"}
    reopened.append({"key": "c", "success": True})
    assert set(EpisodeLedger(path).records) == {"a", "b", "c"}


def test_ledger_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text(json.dumps({"schema": "cfgrl.eval_results", "schema_version": 0, "kind": "episodes"}) + "\n")
    with pytest.raises(CfgrlError, match="schema version 0"):
        EpisodeLedger(path)
    path.write_text("not json\n")
    with pytest.raises(CfgrlError, match="not an evaluation episode log"):
        EpisodeLedger(path)


def test_checkpoint_fingerprint_follows_the_weights_not_the_eval_runs_inside(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(range(256)) * 20_000)  # > 2 MiB: both ends hashed
    before = checkpoint_fingerprint(tmp_path)
    (tmp_path / "eval" / "run").mkdir(parents=True)
    (tmp_path / "eval" / "run" / "episodes.jsonl").write_text("{}\n")
    assert checkpoint_fingerprint(tmp_path) == before
    weights = bytearray((tmp_path / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # the last byte of a retrained tensor
    (tmp_path / "model.safetensors").write_bytes(bytes(weights))
    assert checkpoint_fingerprint(tmp_path) != before


def test_coarse_meshes_key_evaluations_and_meshes_as_shipped_keep_the_old_key():
    import hashlib

    from cfgrl.evaluate.plan import settings_digest

    shipped = load_config(overrides=["env.name=metaworld", "env.image_size=96"])
    before = {"env": {"name": "metaworld", "image_size": 96, "max_steps": None}, "inference": {"num_steps": 10, "replan_steps": 5}}
    assert settings_digest(shipped) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    coarse = load_config(overrides=["env.name=metaworld", "env.image_size=96", "env.mesh_grid_mm=10"])
    assert settings_digest(coarse) != settings_digest(shipped)  # other frames, other episodes: never resumed as these
