"""The ``libero`` backend on the real LIBERO simulator (installed by scripts/setup_libero.sh).

One environment is shared by the module: every LIBERO process spends ~20 s before its first step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import EnvConfig
from cfgrl.envs import ACTION_DIM, STATE_DIM, make_env
from cfgrl.envs.libero import NUM_WAIT_STEPS, SUITE_MAX_STEPS, LiberoEnv, quat_to_axis_angle, state_vector
from cfgrl.errors import CfgrlError
from cfgrl.store import Store

SIZE = 224


@pytest.fixture(scope="module")
def libero():
    env = make_env(EnvConfig(name="libero", suite="libero_spatial", image_size=SIZE))
    first = env.reset(task_id=0, init_state_id=0, seed=2**56 - 1)  # the collector's episode seeds are 56-bit
    yield env, first
    env.close()


def test_axis_angle_of_known_rotations():
    half = np.pi / 4  # a quarter turn about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, np.sin(half), np.cos(half)])), [0, 0, np.pi / 2], atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [np.pi, 0, 0], atol=1e-9)
    np.testing.assert_array_equal(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), np.zeros(3))


@pytest.mark.libero
def test_reset_renders_both_cameras_at_the_configured_size(libero):
    env, first = libero
    assert env.name == "libero" and env.renderer in ("egl", "osmesa")
    assert env.camera_names == ("agentview", "wrist")
    assert set(first.images) == {"agentview", "wrist"}
    for img in first.images.values():
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        assert img.std() > 10  # a scene, not a blank buffer
    assert first.prompt == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert first.state.shape == (STATE_DIM,) and first.state.dtype == np.float32 and np.all(np.isfinite(first.state))
    assert first.state[6] > 0.02 and first.state[7] < -0.02  # the fingers start open, symmetric about the centre


@pytest.mark.libero
def test_images_are_the_raw_render_rotated_180_degrees(libero):
    env, _ = libero
    images = env.render()
    for name, camera in (("agentview", "agentview"), ("wrist", "robot0_eye_in_hand")):
        raw = env.raw_frame(camera)
        np.testing.assert_array_equal(images[name], raw[::-1, ::-1])
        assert not np.array_equal(images[name], raw)  # the rotation really changes the frame
        assert images[name].flags.c_contiguous


@pytest.mark.libero
def test_wait_steps_then_steps_without_rendering(libero):
    env, _ = libero
    assert env.num_wait_steps == NUM_WAIT_STEPS == 10
    np.testing.assert_array_equal(env.wait_action, [0, 0, 0, 0, 0, 0, -1])
    assert env.wait_action.shape == (ACTION_DIM,)
    for _ in range(env.num_wait_steps):
        result = env.step(env.wait_action, render=False)
        assert result.obs.images is None and result.reward == 0.0 and not result.success
    before = result.obs.state
    up = np.array([0, 0, 1, 0, 0, 0, -1], np.float32)  # move the end effector up, gripper open
    for _ in range(3):
        result = env.step(up, render=False)
        assert result.obs.images is None
        assert result.obs.state.shape == (STATE_DIM,) and np.all(np.isfinite(result.obs.state))
    assert result.obs.state[2] > before[2] + 0.005  # z of the end effector rose
    rendered = env.step(env.wait_action, render=True)
    assert rendered.obs.images["agentview"].shape == (SIZE, SIZE, 3)


@pytest.mark.libero
def test_soft_reset_restores_an_init_state_as_a_fresh_simulator_has_it(libero):
    """The simulator is reset softly (no scene rebuild) between episodes of a task: after another
    init state and some motion, resetting to init state 0 gives back the fixture's first observation."""
    env, first = libero
    env.reset(task_id=0, init_state_id=3, seed=5)
    for _ in range(5):
        env.step(np.array([0.5, 0, 0.5, 0, 0, 0, 1], np.float32), render=False)
    again = env.reset(task_id=0, init_state_id=0, seed=2**56 - 1)
    np.testing.assert_array_equal(again.state, first.state)
    for name in first.images:
        assert np.abs(again.images[name].astype(int) - first.images[name]).mean() < 1.0, name


@pytest.mark.libero
def test_suite_tasks_and_bad_ids(libero):
    env, _ = libero
    tasks = env.tasks()
    assert [t.task_id for t in tasks] == list(range(10))
    assert all(t.num_init_states == 50 and t.init_state_limit == 1_000_000 and t.max_steps == SUITE_MAX_STEPS["libero_spatial"] == 220 for t in tasks)
    with pytest.raises(CfgrlError, match="task 10 is not in LIBERO suite 'libero_spatial'; valid tasks: 0 \\(pick up"):
        env.reset(task_id=10, init_state_id=0, seed=0)
    with pytest.raises(CfgrlError, match="init state 1000000 is out of range; task 0 of libero_spatial has 0..49 \\(the benchmark's\\)"):
        env.reset(task_id=0, init_state_id=1_000_000, seed=0)  # 50 and up: drawn layouts (test_libero_layouts.py)
    with pytest.raises(ValueError, match="7 finite numbers"):
        env.step(np.zeros(6), render=False)


@pytest.mark.libero
def test_config_errors_and_step_limit_override():
    with pytest.raises(CfgrlError, match="choose one of: libero_spatial, libero_object, libero_goal, libero_10, libero_90"):
        LiberoEnv(EnvConfig(name="libero", suite="reach"))
    with pytest.raises(CfgrlError, match="task 12 is not in LIBERO suite 'libero_goal'"):
        LiberoEnv(EnvConfig(name="libero", suite="libero_goal", tasks=[0, 12]))
    env = LiberoEnv(EnvConfig(name="libero", suite="libero_10", max_steps=7))  # builds no simulator until reset
    assert len(env.tasks()) == 10 and {t.max_steps for t in env.tasks()} == {7}
    env.close()


@pytest.mark.libero
@pytest.mark.slow
def test_collect_records_libero_episodes_as_the_simulator_replays_them(libero, tmp_path):
    """`cfgrl collect` on LIBERO (a fresh random tiny policy, one group of K=2 short episodes), then the
    first episode is replayed from its recorded actions in this process and compared field by field."""
    env, _ = libero
    store_path = tmp_path / "libero.zarr"
    max_steps, replan = 6, 5
    args = ["collect", str(store_path), "--episodes", "2", "--workers", "1", "-o", "collect.group_size=2",
            "-o", "env.name=libero", "-o", "env.suite=libero_spatial", "-o", f"env.image_size={SIZE}",
            "-o", f"env.max_steps={max_steps}", "-o", "env.tasks=[0]", "-o", "env.init_states=[2]",
            "-o", f"inference.replan_steps={replan}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.stdout}\n{result.exception}"

    store = Store(store_path)
    ep = store.episodes
    assert len(ep) == 2 and list(ep.rollout_index) == [0, 1] and ep.seed[0] != ep.seed[1]
    row = ep.iloc[0]
    assert (row.env, row.suite, row.task_id, row.init_state_id) == ("libero", "libero_spatial", 0, 2)
    assert row.prompt == env.tasks()[0].prompt and row.renderer == env.renderer
    assert row.num_wait_steps == NUM_WAIT_STEPS and row.length == NUM_WAIT_STEPS + max_steps
    states, actions = store.episode_steps(0, "state"), store.episode_steps(0, "action")
    is_wait, rewards, dones = (store.episode_steps(0, name) for name in ("is_wait", "reward", "done"))
    assert is_wait.tolist() == [True] * NUM_WAIT_STEPS + [False] * max_steps
    np.testing.assert_array_equal(actions[:NUM_WAIT_STEPS], np.tile(env.wait_action, (NUM_WAIT_STEPS, 1)))
    assert not np.array_equal(actions[NUM_WAIT_STEPS:], store.episode_steps(1, "action")[NUM_WAIT_STEPS:])
    frame_steps = store.frame_steps()[row.frame_start : row.frame_start + row.frame_count].tolist()
    assert frame_steps == [NUM_WAIT_STEPS, NUM_WAIT_STEPS + replan]  # the policy's query steps

    obs = env.reset(int(row.task_id), int(row.init_state_id), int(row.seed))
    for t, action in enumerate(actions):
        np.testing.assert_allclose(states[t], obs.state, atol=1e-5, err_msg=f"state before step {t}")
        if t in frame_steps:
            frame = frame_steps.index(t) + int(row.frame_start)
            for name, camera in (("agentview", "agentview"), ("wrist", "robot0_eye_in_hand")):
                stored = np.asarray(store.frames(name)[frame])
                upright = env.raw_frame(camera)[::-1, ::-1]  # the stored frame is the GL frame rotated 180 degrees
                assert np.abs(stored.astype(int) - upright).mean() < 1.0, f"{name} frame at step {t}"
        step = env.step(action, render=False)
        assert rewards[t] == step.reward and dones[t] == step.success
        obs = step.obs


def test_export_fps_is_the_simulators_control_frequency(libero):
    """`cfgrl export-dataset` writes lerobot's fps from a table; it must be what robosuite steps at."""
    from cfgrl.lerobot_data.export import CONTROL_HZ

    env, _ = libero
    assert env._sim.env.control_freq == CONTROL_HZ["libero"]


@pytest.mark.libero
def test_drawing_for_the_cpu_changes_the_frames_a_little_and_the_physics_not_at_all(libero):
    """env.mesh_grid_mm on LIBERO: the robot's and the scanned objects' meshes lose most faces, the small
    textured ones none; reflections and multisampling are off; the scripted expert's steps give
    bit-identical physics, and the frames show the same scene."""
    from cfgrl.envs.meshes import DENSE_FACES, TEXTURED_DENSE_FACES

    env, _ = libero
    coarse = make_env(EnvConfig(name="libero", suite="libero_spatial", image_size=SIZE, mesh_grid_mm=5))
    try:
        ours, theirs = env.reset(0, 4, seed=7), coarse.reset(0, 4, seed=7)
        shipped, model = env._sim.env.sim.model._model, coarse._sim.env.sim.model._model
        textured = shipped.mesh_texcoordnum > 0
        dense = shipped.mesh_facenum > np.where(textured, TEXTURED_DENSE_FACES, DENSE_FACES)
        assert (model.mesh_facenum[dense] < 0.6 * shipped.mesh_facenum[dense]).all()
        assert (model.mesh_facenum[~dense] == shipped.mesh_facenum[~dense]).all() and (textured & ~dense).any()
        assert model.mesh_facenum.sum() < 0.5 * shipped.mesh_facenum.sum()
        assert (shipped.mat_reflectance > 0).any() and not model.mat_reflectance.any() and model.vis.quality.offsamples == 0
        for t in range(40):
            action = env.scripted_chunk(0.0, horizon=1)[0]
            np.testing.assert_array_equal(coarse.scripted_chunk(0.0, horizon=1)[0], action)
            ours, theirs = env.step(action, render=t == 39), coarse.step(action, render=t == 39)
            np.testing.assert_array_equal(theirs.obs.state, ours.obs.state, err_msg=f"state after step {t}")
        np.testing.assert_array_equal(coarse._sim.env.sim.data.qpos, env._sim.env.sim.data.qpos)
        for name in ours.obs.images:
            changed = np.abs(ours.obs.images[name].astype(int) - theirs.obs.images[name]).max(-1) > 16
            assert 0 < changed.mean() < 0.15, name  # edges without anti-aliasing, a matt stove, coarser robot links
        assert "dense meshes on a 5 mm grid" in coarse.renderer and "grid" not in env.renderer
    finally:
        coarse.close()


def test_split_substeps_give_robosuites_own_step_bit_for_bit(libero):
    """LiberoEnv.step runs robosuite's control loop on mj_step1/mj_step2 (one forward pass per substep
    instead of three): the expert's first 120 steps, grasp included, leave exactly the state, success
    and observation robosuite's own loop leaves."""
    from cfgrl.envs.libero import one_forward_per_substep

    env, _ = libero
    env.reset(0, 5, seed=3)
    actions, ours = [], []
    for _ in range(24):
        for action in env.scripted_chunk(0.0, horizon=5):  # the collector's replanning
            actions.append(action)
            ours.append(env.step(action, render=False))
    assert any(action[-1] > 0 for action in actions)  # the gripper closes within these steps
    ours_state = env._sim.env.sim.get_state().flatten()
    env.reset(0, 5, seed=3)
    sim = env._sim.env.sim
    for t, action in enumerate(actions):
        raw, _, done, _ = env._sim.step(np.clip(action, -1.0, 1.0))  # robosuite's loop: mj_forward twice, then mj_step
        assert "forward" not in vars(sim) and bool(done) == ours[t].success
        np.testing.assert_array_equal(state_vector(raw), ours[t].obs.state, err_msg=f"state after step {t}")
    np.testing.assert_array_equal(sim.get_state().flatten(), ours_state)
    with one_forward_per_substep(sim):
        assert "forward" in vars(sim)
    assert "forward" not in vars(sim) and "step" not in vars(sim)  # restored after the step


def test_make_demo_on_the_cpu_config_end_to_end(tmp_path):
    """`make demo ENV=libero` (no POLICY: configs/libero_cpu.yaml and a scripted base) cut to one task,
    30-step episodes at 32 px and two training steps: base, round 1, filtered BC and the weighted loss on
    the real simulator, w chosen on a drawn layout, every arm on the same fixed test init states."""
    repo, venv = Path(__file__).resolve().parents[2], Path(sys.executable).parent.parent
    tree = yaml.safe_load((repo / "configs" / "libero_cpu.yaml").read_text())
    tree["env"].update(tasks=[0], image_size=32, max_steps=30)
    tree["collect"].update(groups=1, group_size=2, workers=1)
    # 30 steps never succeed: label every window o = 1 so that the baselines have positives to train on.
    tree["cfgrl"] = {"label_source": "window_return", "label_threshold": 0.0, "zero_variance_groups": "keep"}
    tree["train"].update(steps=2, decay_steps=2, warmup_steps=0, save_every=2, batch_size=8)
    tree["evaluate"].update(init_states=[0, 1], validation_init_states=[50])
    config = tmp_path / "libero_small.yaml"
    config.write_text(yaml.safe_dump(tree))
    data = tmp_path / "data"
    done = subprocess.run(["make", "-C", str(repo), "demo", "ENV=libero", f"VENV={venv}", f"SETUP={sys.executable}",
                           f"CONFIG={config}", f"DATA={data}", "DEMO_EPISODES=2", "BASE_STEPS=2", "DEMO_FLAGS=--one-round"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "-c " + str(config) in done.stdout and "--demo-episodes 2" in done.stdout
    record = json.loads((data / "demo" / "report.json").read_text())
    assert record["round_1"]["chosen_cfg_scale"] in (1.0, 2.0)
    assert (Store(data / "demo" / "demos.zarr").episodes.init_state_id >= 100).all()  # training on drawn layouts
    for eval_dir in (Path(record["round_1"]["eval"]), data / "demo" / "filtered_bc" / "eval", data / "demo" / "weighted" / "eval"):
        lines = [json.loads(line) for line in (eval_dir / "episodes.jsonl").read_text().splitlines()[1:]]
        split = {name: {(e["task_id"], e["init_state_id"]) for e in lines if e["split"] == name} for name in ("test", "validation")}
        assert split["test"] == {(0, 0), (0, 1)}, eval_dir
        assert split["validation"] == ({(0, 50)} if eval_dir.parent.name != "filtered_bc" else set()), eval_dir  # one w: nothing to choose
