"""LIBERO's scripted expert (``cfgrl.envs.libero_expert``) on the real simulator: a few short episodes.

One environment is shared by the module (every LIBERO process spends ~20 s before its first step).
"""

from __future__ import annotations

import numpy as np
import pytest

from cfgrl.config import EnvConfig
from cfgrl.envs import make_env
from cfgrl.envs.libero_expert import goal_of, narrowest_side, wrong_object

REPLAN = 5  # the collector's inference.replan_steps: the expert plans this many actions at a time


@pytest.fixture(scope="module")
def libero():
    env = make_env(EnvConfig(name="libero", suite="libero_spatial", image_size=32))
    yield env
    env.close()


def play(env, task: int, init: int, seed: int, noise: float, limit: int | None = None) -> tuple[bool, np.ndarray, np.ndarray]:
    """One episode as the collector plays it: wait steps, then the expert's chunks until success or
    ``limit`` steps (the suite's by default). Returns (success, every action, the state before each action)."""
    obs = env.reset(task, init, seed)
    actions, states = [], []
    for _ in range(env.num_wait_steps):
        states.append(obs.state)
        actions.append(env.wait_action)
        obs = env.step(env.wait_action, render=False).obs
    steps = 0
    while steps < (limit or env.max_steps):
        for action in env.scripted_chunk(noise, horizon=REPLAN):
            states.append(obs.state)
            actions.append(action)
            result = env.step(action, render=False)
            obs, steps = result.obs, steps + 1
            if result.success:
                return True, np.array(actions), np.array(states)
    return False, np.array(actions), np.array(states)


@pytest.mark.libero
@pytest.mark.parametrize("task, init", [(0, 0), (0, 7), (4, 0)])  # 4: the bowl in the drawer, pinched by its rim
def test_the_expert_succeeds_at_noise_0(libero, task, init):
    success, actions, _ = play(libero, task, init, seed=11, noise=0.0)
    assert success, f"task {task} init state {init}"
    assert len(actions) < libero.num_wait_steps + libero.max_steps
    assert np.all(np.abs(actions) <= 1.0)


@pytest.mark.libero
def test_the_same_phases_serve_libero_objects_floor_scene():
    """libero_object stands on the floor, not a table: the expert's heights follow the robot's base and
    the basket's rim. Its butter box is as long as the open hand is wide, along the robot's side, so
    the fingers close across its narrow side; the expert lifts it and drops it in the basket."""
    env = make_env(EnvConfig(name="libero", suite="libero_object", image_size=32))
    try:
        env.reset(6, 0, seed=11)
        sim = env._sim.env
        butter = sim.sim.model.body_name2id(sim.objects_dict[goal_of(sim)[0]].root_body)
        data, model = sim.sim.data._data, sim.sim.model._model
        base = data.xpos[sim.sim.model.body_name2id(sim.robots[0].robot_model.root_body)]
        towards_robot = (base - data.xpos[butter])[:2] / np.linalg.norm((base - data.xpos[butter])[:2])
        side, narrower = narrowest_side(model, data, butter, towards_robot)
        assert narrower > 0.03 and abs(side[1]) > 0.9  # 4 cm across y against 8 cm along x
        success, _, _ = play(env, 6, 0, seed=11, noise=0.0)
        assert success and env._expert.plan.carry_z < 0.5  # libero_spatial's table is at 0.9 m
    finally:
        env.close()


@pytest.mark.libero
def test_noise_1_goes_for_the_other_bowl_and_fails_where_noise_0_succeeds(libero):
    libero.reset(0, 0, seed=11)
    sim = libero._sim.env
    obj, place = goal_of(sim)
    assert (obj, place) == ("akita_black_bowl_1", "plate_1")
    assert wrong_object(sim, obj, place, draw=0.5, noise=1.0) == "akita_black_bowl_2"  # the same kind: the other bowl
    assert wrong_object(sim, obj, place, draw=0.5, noise=0.4) == obj
    assert play(libero, 0, 0, seed=11, noise=0.0)[0]
    success, actions, _ = play(libero, 0, 0, seed=11, noise=1.0)
    assert not success
    bowl_2 = sim.sim.data.body_xpos[sim.sim.model.body_name2id("akita_black_bowl_2_main")]
    plate = sim.sim.data.body_xpos[sim.sim.model.body_name2id("plate_1_main")]
    assert np.linalg.norm(bowl_2[:2] - plate[:2]) < 0.05  # it moved the wrong bowl onto the plate


@pytest.mark.libero
def test_expert_episodes_replay_exactly_from_their_seed(libero):
    """The expert's actions are a function of (task, init state, seed, noise); replaying them from a
    fresh reset gives the same states, step for step."""
    _, actions, states = play(libero, 0, 7, seed=3, noise=0.3, limit=40)  # the approach: long enough to tell
    np.testing.assert_array_equal(play(libero, 0, 7, seed=3, noise=0.3, limit=40)[1], actions)
    obs = libero.reset(0, 7, seed=3)
    for t, action in enumerate(actions):
        np.testing.assert_array_equal(obs.state, states[t], err_msg=f"state before step {t}")
        obs = libero.step(action, render=False).obs
    assert not np.array_equal(play(libero, 0, 7, seed=4, noise=0.3, limit=40)[1], actions)  # the jitter is the seed's
