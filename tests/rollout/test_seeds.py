"""Episode seeds are data: stores record them, evaluation logs key episodes by them, and every
measured number in the README was produced with them. These values must never change."""

from cfgrl.config import load_config
from cfgrl.envs.base import TaskInfo
from cfgrl.evaluate.plan import slots_for_suite
from cfgrl.rollout.seeds import episode_seed, group_rollout_seed
from cfgrl.rollout.specs import group_specs


def test_collect_seeds_are_pinned():
    # (collect.seed, group, rollout index)
    assert group_rollout_seed(0, 0, 0) == 61816295328862518
    assert group_rollout_seed(0, 3, 5) == 49378662104916421
    assert group_rollout_seed(7, 12, 1) == 43418727996163546
    assert group_rollout_seed(2**40, 999, 7) == 49966781154555381
    specs = group_specs([0, 1], [0, 1, 2], num_groups=2, group_size=2, base_seed=7)
    assert [(s.group_id, s.rollout_index, s.seed) for s in specs] == [
        (0, 0, 59688593813257669), (0, 1, 49036573677665673), (1, 0, 58877760040319108), (1, 1, 31520196622484622)]


def test_evaluation_seeds_are_pinned():
    # (evaluate.seed, task, init state, repeat[, 1 on validation])
    assert episode_seed(0, 0, 0, 0) == 6375474604893067239
    assert episode_seed(0, 2, 5, 1) == 6419672511448061259
    assert episode_seed(7, 1, 3, 0, 1) == 4441146103804098645
    assert episode_seed(123, 9, 49, 2) == 7289939854540013576
    cfg = load_config(None, ["evaluate.seed=3", "evaluate.init_states=[1]", "evaluate.validation_init_states=[4]",
                             "evaluate.cfg_scales=[1,2]", "evaluate.episodes_per_init=2", "env.tasks=[1]"])
    slots = slots_for_suite(cfg.env, [TaskInfo(0, "a", 10, 50), TaskInfo(1, "b", 10, 50)], cfg)
    assert [(s.split, s.task_id, s.init_state_id, s.repeat, s.seed) for s in slots] == [
        ("test", 1, 1, 0, 7346201219346162950), ("test", 1, 1, 1, 6660419593327583781),
        ("validation", 1, 4, 0, 164081418224132343), ("validation", 1, 4, 1, 1475447991861566729)]
