"""The rollout engine with a real (tiny, random) PI0 policy: batching independence, policy sources."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cfgrl.config import EnvConfig, load_config
from cfgrl.errors import CfgrlError
from cfgrl.rollout.engine import EngineTime, _Queue, default_workers, pool_shape, run_episodes
from cfgrl.rollout.sources import ScriptedExpert, load_policy
from cfgrl.rollout.specs import group_specs
from cfgrl.store import Store

CAMERAS = ("agentview", "wrist")


@pytest.fixture(scope="module")
def tiny_policy():
    notes: list[str] = []
    policy = load_policy(None, load_config(), CAMERAS, 32, say=notes.append)
    assert len(notes) == 1 and "random weights" in notes[0] and "will not learn anything useful" in notes[0]
    return policy


def test_batching_does_not_change_episodes(tiny_policy):
    """1 worker (batches of 1), 2 workers, and 1 worker holding 2 envs (batches of 2 from one process)
    give the same episodes: each episode's flow noise comes from its own seed. Batched float math may
    differ in the last bits: actions within 1e-6."""
    env_cfg = EnvConfig(image_size=32, max_steps=10)
    specs = group_specs([0, 1], [0, 1], 2, 2, base_seed=3)  # two tasks, so the queue picks between them
    runs = {}
    for workers, envs in ((1, 1), (2, 1), (1, 2)):
        episodes = {}
        results = run_episodes(env_cfg, tiny_policy, specs, cfg_scale=1.5, workers=workers, envs_per_worker=envs,
                               progress=False, num_steps=2, on_episode=lambda spec, ep: episodes.__setitem__(spec, ep))
        assert sorted((r.spec.group_id, r.spec.rollout_index) for r in results) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        runs[workers, envs] = episodes
    for spec in specs:
        one = runs[1, 1][spec]
        for other in (runs[2, 1][spec], runs[1, 2][spec]):
            np.testing.assert_allclose(one.action, other.action, rtol=0, atol=1e-6)
            np.testing.assert_allclose(one.state, other.state, rtol=0, atol=1e-6)
            assert one.success == other.success and len(one.action) == len(other.action) == 10
        np.testing.assert_array_equal(one.frame_step, [0, 5])
    a, b = (runs[1, 1][s].action for s in specs[:2])  # two rollouts of one group differ (their own seeds)
    assert np.abs(a - b).max() > 1e-3


def test_free_envs_keep_their_task_and_spread_over_tasks():
    """Each env sticks to the task it has open while that task has episodes left, and a free env
    takes the task the fewest envs are playing: 3 envs over 3 tasks open each task once."""
    specs = group_specs([0, 1, 2], [0], 6, 2, base_seed=0)  # tasks cycle: 0 1 2 0 1 2, two rollouts each
    queue = _Queue(list(enumerate(specs)))
    opened: dict[int, list[int]] = {0: [], 1: [], 2: []}
    playing, taken = {}, []
    while queue or playing:
        for slot in opened:  # a round: each env ends its episode, then takes the next one
            if slot in playing:
                queue.ended(playing.pop(slot))
            if queue:
                index, playing[slot] = queue.take(slot)
                taken.append(index)
                if not opened[slot] or opened[slot][-1] != playing[slot].task_id:
                    opened[slot].append(playing[slot].task_id)
    assert sorted(taken) == list(range(len(specs)))
    assert sorted(tasks[0] for tasks in opened.values()) == [0, 1, 2] and all(len(t) == 1 for t in opened.values())


def test_pool_shape_fills_no_idle_env_and_gives_a_scripted_expert_one_env_per_worker(tiny_policy):
    env_cfg = EnvConfig()
    assert pool_shape(env_cfg, tiny_policy, 240, 2, 4) == (2, 4)
    assert pool_shape(env_cfg, tiny_policy, 5, 2, 4) == (2, 3)  # 6 envs for 5 episodes, not 8
    assert pool_shape(env_cfg, tiny_policy, 3, None, 2) == (2, 2)
    assert pool_shape(env_cfg, ScriptedExpert(0.0), 16, 8, 4) == (8, 1)  # it plays whole episodes, one per worker
    finished = []
    run_episodes(EnvConfig(image_size=32, max_steps=10), ScriptedExpert(0.0), group_specs([0, 1], [0], 2, 2, base_seed=1),
                 cfg_scale=1.0, workers=1, envs_per_worker=3, progress=False, on_episode=lambda spec, ep: finished.append(spec))
    assert sorted((s.group_id, s.rollout_index) for s in finished) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_policy_sources_and_worker_defaults():
    cfg = load_config()
    assert load_policy("scripted:0.25", cfg, CAMERAS, 64) == ScriptedExpert(0.25)
    assert ScriptedExpert(0.25).policy_id == "scripted-noise0.25"
    libero = load_config(overrides=["env.name=libero", "env.suite=libero_spatial"])
    assert load_policy("scripted:0.1", libero, CAMERAS, 64) == ScriptedExpert(0.1)  # LIBERO's pick-and-place expert
    with pytest.raises(CfgrlError, match="noise '1.5' is not valid; give a number in \\[0, 1\\]"):
        load_policy("scripted:1.5", libero, CAMERAS, 64)
    assert default_workers(EnvConfig(), 3) == 3 and default_workers(EnvConfig(), 100) >= 2
    assert default_workers(EnvConfig(), 3, envs_per_worker=2) == 2  # never more workers than the episodes fill
    assert 1 <= default_workers(libero.env, 100) <= (os.cpu_count() or 1)


def test_a_checkpoint_without_the_env_cameras_is_refused_before_any_rollout(tmp_path):
    from cfgrl.policy import PI0Config, PI0Policy

    PI0Policy(PI0Config.from_preset("tiny", camera_names=("agentview",), image_size=32)).save_pretrained(tmp_path / "one_cam")
    with pytest.raises(CfgrlError, match="has no camera wrist"):
        load_policy(str(tmp_path / "one_cam"), load_config(), CAMERAS, 32)


def test_camera_map_renames_a_checkpoints_cameras_to_the_envs(tmp_path):
    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset("tiny", camera_names=("front", "hand"), image_size=32)
    policy = PI0Policy(config, stats=NormStats.identity(config.state_dim, config.action_dim))
    policy.save_pretrained(tmp_path / "other_names")
    with pytest.raises(CfgrlError, match="has no camera agentview, wrist"):
        load_policy(str(tmp_path / "other_names"), load_config(), CAMERAS, 32)
    renamed = load_policy(str(tmp_path / "other_names"), load_config(overrides=["policy.camera_map=[front=agentview, hand=wrist]"]), CAMERAS, 32)
    assert renamed.config.camera_names == ("agentview", "wrist")
    with pytest.raises(CfgrlError, match="names side, which the checkpoint lacks; its cameras are front, hand"):
        load_policy(str(tmp_path / "other_names"), load_config(overrides=["policy.camera_map=[side=agentview]"]), CAMERAS, 32)
    with pytest.raises(CfgrlError, match="one twice"):
        load_policy(str(tmp_path / "other_names"), load_config(overrides=["policy.camera_map=[front=hand]"]), CAMERAS, 32)
    with pytest.raises(CfgrlError, match="item 'front' is not valid; give distinct CHECKPOINT=ENV pairs"):
        load_config(overrides=["policy.camera_map=[front]"])


def test_engine_time_split_names_the_collectors_own_overhead():
    split = EngineTime(policy_s=6.0, store_s=1.0, pipe_s=0.5, wall_s=10.0).line()
    assert split == ("collector time: policy 6.0 s (60%), storing episodes 1.0 s (10%), pipes 0.5 s (5%), "
                     "waiting for environments 2.5 s (25%)")


def test_a_chunk_shorter_than_replan_steps_is_refused_before_any_rollout(tmp_path):
    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset("tiny", camera_names=CAMERAS, image_size=32, chunk_size=4)
    PI0Policy(config, stats=NormStats.identity(8, 7)).save_pretrained(tmp_path / "short")
    with pytest.raises(CfgrlError, match=r"chunks of 4 actions, fewer than inference.replan_steps=5"):
        load_policy(str(tmp_path / "short"), load_config(), CAMERAS, 32)
    assert load_policy(str(tmp_path / "short"), load_config(None, ["inference.replan_steps=4"]), CAMERAS, 32).config.chunk_size == 4


def test_policy_dtype_loads_the_checkpoint_in_it_and_keys_evaluations_by_it(tmp_path):
    import torch

    from cfgrl.evaluate.plan import settings_digest
    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset("tiny", image_size=32)
    PI0Policy(config, stats=NormStats.identity(config.state_dim, config.action_dim)).save_pretrained(tmp_path / "p")
    auto = load_policy(str(tmp_path / "p"), load_config(), CAMERAS, 32)
    half = load_policy(str(tmp_path / "p"), load_config(overrides=["policy.dtype=bf16"]), CAMERAS, 32)
    assert auto.dtype == torch.float32 and half.dtype == torch.bfloat16  # auto is fp32 without CUDA
    assert half.policy_id != auto.policy_id  # bf16 rollouts are told apart from fp32 ones
    finished = []
    run_episodes(EnvConfig(image_size=32, max_steps=5), half, group_specs([0], [0], 1, 1, base_seed=3), cfg_scale=1.0,
                 workers=1, progress=False, num_steps=2, on_episode=lambda spec, ep: finished.append(ep))
    assert len(finished) == 1 and np.isfinite(finished[0].action).all()
    with pytest.raises(CfgrlError, match="unknown policy.dtype 'fp16'; accepted: fp32, bf16, auto"):
        load_policy(str(tmp_path / "p"), load_config(overrides=["policy.dtype=fp16"]), CAMERAS, 32)
    # fp32 (auto here) keeps the digest evaluation logs were keyed by before policy.dtype; bf16 is another setting
    assert settings_digest(load_config(overrides=["policy.dtype=fp32"])) == settings_digest(load_config())
    assert settings_digest(load_config(overrides=["policy.dtype=bf16"])) != settings_digest(load_config())


def test_a_policy_that_cannot_tell_the_tasks_apart_is_refused():
    """The tiny preset reads 32 bytes of prompt: two tasks that differ only after them are refused in
    one line; a longer policy.max_token_len tells them apart."""
    prompts = ["pick up the puck and place it at the goal", "pick up the puck and place it at the goal behind the wall"]
    with pytest.raises(CfgrlError, match=r"^tasks .* have the same prompt once cut to the policy's max_token_len 32; .* "
                                         r"-o policy.max_token_len=64") as err:
        load_policy(None, load_config(), CAMERAS, 32, say=lambda _: None, prompts=prompts)
    assert "\n" not in str(err.value)
    longer = load_policy(None, load_config(overrides=["policy.max_token_len=64"]), CAMERAS, 32, say=lambda _: None, prompts=prompts)
    assert longer.config.max_token_len == 64
    load_policy(None, load_config(), CAMERAS, 32, say=lambda _: None, prompts=[prompts[0], "push the puck to the goal"])
