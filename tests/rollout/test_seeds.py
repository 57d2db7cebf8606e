"""Episode seeds are data: stores record them, evaluation logs key episodes by them, and every
measured number in the README was produced with them. These values change only with ``SCHEME``."""

import cfgrl.rollout.specs
from cfgrl.config import load_config
from cfgrl.envs.base import TaskInfo
from cfgrl.evaluate.plan import slots_for_suite
from cfgrl.rollout.seeds import episode_seed
from cfgrl.rollout.specs import group_specs, run_id


def test_collect_seeds_are_pinned():
    # ("collect", collect.seed, group, rollout index)
    assert episode_seed("collect", 0, 3, 5) == 7830649361871524544
    assert episode_seed("collect", 7, 12, 1) == 8514868875087827141
    assert episode_seed("collect", 2**40, 999, 7) == 6661829836228272626
    specs = group_specs([0, 1], [0, 1, 2], num_groups=2, group_size=2, base_seed=7)
    assert [(s.group_id, s.rollout_index, s.seed) for s in specs] == [
        (0, 0, 2941620403797343574), (0, 1, 3871534063613840383), (1, 0, 1424514439698617904), (1, 1, 5474214115786552295)]


def test_evaluation_seeds_are_pinned():
    # (split, evaluate.seed, task, init state, repeat)
    assert episode_seed("test", 0, 2, 5, 1) == 371469647858604548
    assert episode_seed("validation", 7, 1, 3, 0) == 3690838740616318475
    assert episode_seed("test", 123, 9, 49, 2) == 3517096151607803044
    cfg = load_config(None, ["evaluate.seed=3", "evaluate.init_states=[1]", "evaluate.validation_init_states=[4]",
                             "evaluate.cfg_scales=[1,2]", "evaluate.episodes_per_init=2", "env.tasks=[1]"])
    slots = slots_for_suite(cfg.env, [TaskInfo(0, "a", 10, 50), TaskInfo(1, "b", 10, 50)], cfg)
    assert [(s.split, s.task_id, s.init_state_id, s.repeat, s.seed) for s in slots] == [
        ("test", 1, 1, 0, 7324988642344210441), ("test", 1, 1, 1, 4648018054821856793),
        ("validation", 1, 4, 0, 2932337493068985808), ("validation", 1, 4, 1, 2265678376132604885)]


def test_streams_keep_the_stages_apart():
    # Same integer keys, other stream: other seeds (a validation episode on a test init state, as
    # LIBERO's protocol runs it, never replays the test episode; collect never replays evaluation).
    keys = (0, 3, 5, 0)
    assert len({episode_seed("collect", *keys[:3]), episode_seed("test", *keys), episode_seed("validation", *keys)}) == 3


def test_the_seed_derivation_is_part_of_every_run_identity(monkeypatch):
    # A store collected under another derivation resumes as a new run, never mixing two kinds of seeds.
    now = run_id(stage="collect", seed=0)
    monkeypatch.setattr(cfgrl.rollout.specs, "SCHEME", "episode_seed/1")
    assert run_id(stage="collect", seed=0) != now
