"""The built-in ``reach`` environment and its scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

from cfgrl.config import EnvConfig
from cfgrl.envs import ACTION_DIM, STATE_DIM, make_env
from cfgrl.envs.builtin import CLOSED, HOLD_STEPS, NUM_INIT_STATES, PLACE_CENTRES, BuiltinEnv, initial_layout
from cfgrl.envs.scripted import chosen_ball, parse_noise, policy_id
from cfgrl.errors import CfgrlError

GRIP, TOUCH = 6, 7  # state indices of the gripper closure and the touch sensor


@pytest.fixture
def env() -> BuiltinEnv:
    return make_env(EnvConfig(image_size=32))


def rollout(env: BuiltinEnv, task: int, init: int, seed: int, noise: float, replan: int = 5):
    """Scripted episode; returns (success, steps, states, actions)."""
    env.reset(task, init, seed)
    states, actions = [], []
    for t in range(env.max_steps):
        if t % replan == 0:
            chunk = env.scripted_chunk(noise)
        result = env.step(chunk[t % replan], render=False)
        states.append(result.obs.state)
        actions.append(chunk[t % replan])
        if result.success:
            return True, t + 1, np.array(states), np.array(actions)
    return False, env.max_steps, np.array(states), np.array(actions)


def test_interface_shapes_and_metadata(env):
    obs = env.reset(0, 0, 0)
    assert env.name == "builtin" and env.renderer == "numpy" and env.num_wait_steps == 0
    assert env.camera_names == ("agentview", "wrist")
    assert obs.state.shape == (STATE_DIM,) and obs.state.dtype == np.float32
    assert set(obs.images) == {"agentview", "wrist"}
    for img in obs.images.values():
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert env.wait_action.shape == (ACTION_DIM,)
    assert all(t.num_init_states == NUM_INIT_STATES == 500 and t.max_steps == env.max_steps for t in env.tasks())


def test_prompts_differ_per_task_and_max_steps_override():
    env = make_env(EnvConfig(max_steps=17))
    prompts = [t.prompt for t in env.tasks()]
    assert len(prompts) >= 3 and len(set(prompts)) == len(prompts)
    assert all(t.max_steps == 17 for t in env.tasks())
    assert env.reset(1, 0, 0).prompt == prompts[1]


def test_init_states_are_fixed_and_differ():
    balls_a, colours_a, start_a = initial_layout(3)
    balls_b, colours_b, start_b = initial_layout(3)
    assert np.array_equal(balls_a, balls_b) and np.array_equal(colours_a, colours_b) and np.array_equal(start_a, start_b)
    layouts = {initial_layout(i)[0].round(6).tobytes() for i in range(50)}
    assert len(layouts) == 50
    assert len({initial_layout(i)[1].tobytes() for i in range(50)}) > 1  # colours vary too
    for i in range(NUM_INIT_STATES):  # well separated balls, start nearer the centre than any ball
        balls, colours, start = initial_layout(i)
        gaps = np.linalg.norm(balls[:, None] - balls[None], axis=-1) + np.eye(len(balls)) * 9
        assert gaps.min() > 0.4 and np.linalg.norm(balls - start, axis=1).min() > 0.25
        assert sorted(colours) == [0, 1, 2, 3]


def test_the_prompt_names_a_quarter_and_every_task_shares_the_scene(env):
    """Task i names the ball in quarter i; one init state is one scene whatever the task."""
    scenes = []
    for task in env.tasks():
        obs = env.reset(task.task_id, 7, seed=0)
        place = task.prompt.removeprefix("grasp the ").removesuffix(" ball")
        sim = env._sim
        centre = PLACE_CENTRES[task.task_id]
        assert obs.prompt == task.prompt and place in ("top left", "top right", "bottom left", "bottom right")
        assert np.argmin(np.linalg.norm(sim.balls - centre, axis=1)) == sim.target == task.task_id
        assert (centre[0] < 0) == ("left" in place) and (centre[1] > 0) == ("top" in place)
        scenes.append(np.concatenate([sim.balls.ravel(), sim.colours]))
    assert all(np.array_equal(scenes[0], scene) for scene in scenes[1:])


def test_same_seed_same_episode_other_seed_differs(env):
    _, _, states_a, actions_a = rollout(env, 1, 4, seed=7, noise=0.3)
    _, _, states_b, actions_b = rollout(env, 1, 4, seed=7, noise=0.3)
    assert np.array_equal(states_a, states_b) and np.array_equal(actions_a, actions_b)
    first_a = env.reset(1, 4, 7).state
    first_c = env.reset(1, 4, 8).state
    assert not np.array_equal(first_a, first_c)  # K rollouts from one init state differ


def test_actions_are_clipped(env):
    env.reset(0, 0, 0)
    big = env.step(np.full(ACTION_DIM, 50.0), render=False).obs.state
    env.reset(0, 0, 0)
    unit = env.step(np.full(ACTION_DIM, 1.0), render=False).obs.state
    np.testing.assert_allclose(big, unit)


def test_perfect_expert_succeeds_with_reward_on_the_success_step_only(env):
    env.reset(3, 5, 0)
    rewards, successes = [], []
    for t in range(env.max_steps):
        if t % 5 == 0:
            chunk = env.scripted_chunk(0.0)
        result = env.step(chunk[t % 5], render=False)
        rewards.append(result.reward)
        successes.append(result.success)
        if result.success:
            break
    assert successes[-1] and not any(successes[:-1])
    assert rewards[-1] == 1.0 and sum(rewards[:-1]) == 0.0
    assert 10 <= len(rewards) <= 45  # a multi-step sequence, done well within max_steps
    assert result.obs.state[TOUCH] == 1.0  # the touch sensor reports the held ball


def test_doing_nothing_or_grasping_the_wrong_ball_never_succeeds(env):
    env.reset(0, 1, 0)
    assert not any(env.step(env.wait_action, render=False).success for _ in range(env.max_steps))
    # chosen_ball with draw < noise picks another ball: the expert grasps and holds it, no success.
    assert chosen_ball(0, 4, noise=0.5, draw=0.1) != 0 and chosen_ball(0, 4, noise=0.5, draw=0.7) == 0
    success, *_ = rollout(env, 0, 1, seed=0, noise=1.0)
    assert not success


def test_noisy_expert_fumbles_then_opens_and_still_succeeds(env):
    """A noisy expert sometimes closes the gripper over empty table (state: closed, nothing held),
    then opens it and goes on; the perfect expert never does."""
    def closed_on_nothing(states: np.ndarray) -> np.ndarray:
        return (states[:, GRIP] >= CLOSED) & (states[:, TOUCH] == 0.0)

    recovered = 0
    for task in range(4):
        for init in range(6):
            success, _, states, _ = rollout(env, task, init, seed=init, noise=0.5)
            fumbled = closed_on_nothing(states)
            if fumbled.any() and success:
                first = int(np.argmax(fumbled))
                assert (states[first:, GRIP] < CLOSED).any()  # it opened again before the successful grasp
                recovered += 1
            assert not closed_on_nothing(rollout(env, task, init, seed=init, noise=0.0)[2]).any()
    assert recovered >= 2


def test_holding_must_last(env):
    """Closing on the named ball and opening at once is not a success: it must be held."""
    success, steps, states, actions = rollout(env, 2, 2, seed=1, noise=0.0)
    assert success
    grasp = int(np.argmax(states[:, TOUCH] > 0))  # first step with the ball in hand
    assert steps - grasp == HOLD_STEPS


def test_images_change_with_state_and_render_false_returns_none(env):
    first = env.reset(0, 0, 0).images
    result = env.step(np.array([1, 1, 0, 0, 0, 0, 0], np.float32), render=False)
    assert result.obs.images is None
    for _ in range(4):
        result = env.step(np.array([1, 1, 0, 0, 0, 0, 0], np.float32), render=True)
    for cam in ("agentview", "wrist"):
        assert not np.array_equal(first[cam], result.obs.images[cam])
    other_layout = env.reset(0, 1, 0).images["agentview"]
    assert not np.array_equal(first["agentview"], other_layout)


def test_every_colour_is_visible_in_the_agentview(env):
    from cfgrl.envs.builtin import COLOURS

    img = env.reset(0, 0, 0).images["agentview"].reshape(-1, 3)
    for colour in COLOURS.values():
        assert (np.abs(img.astype(int) - colour).sum(axis=1) == 0).sum() >= 4


def test_scripted_success_rate_decreases_with_noise(env):
    def rate(noise: float) -> float:
        return np.mean([rollout(env, t, i, seed=i, noise=noise)[0] for t in range(4) for i in range(6)])

    clean, noisy, hopeless = rate(0.0), rate(0.5), rate(1.0)
    assert clean >= 0.95 and hopeless == 0.0
    assert clean > noisy > hopeless


def test_bad_suite_task_and_noise_are_clear_errors(env):
    with pytest.raises(CfgrlError, match="choose one of: reach"):
        make_env(EnvConfig(suite="libero_spatial"))
    with pytest.raises(CfgrlError, match="valid tasks: 0 \\(grasp the top left ball\\)"):
        env.reset(9, 0, 0)
    with pytest.raises(CfgrlError, match="0..499"):
        env.reset(0, 500, 0)
    with pytest.raises(CfgrlError, match="in \\[0, 1\\]"):
        parse_noise("lots")
    assert policy_id(parse_noise("0.3")) == "scripted-noise0.30"


def test_expert_executes_the_same_actions_whatever_it_plans_ahead(env):
    env.reset(1, 2, 5)
    full = env.scripted_chunk(0.4, horizon=50)
    env.reset(1, 2, 5)
    short = env.scripted_chunk(0.4, horizon=5)
    assert full.shape == (50, 7) and short.shape == (5, 7)
    np.testing.assert_array_equal(full[:5], short)
    assert np.abs(full).max() <= 1.0
