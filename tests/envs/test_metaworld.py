"""The ``metaworld`` backend on the real Meta-World simulator (installed by scripts/setup_metaworld.sh).

Single-task suites (MT1) keep these fast: building one takes ~1 s, MT10 ~7-14 s.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import EnvConfig
from cfgrl.envs import STATE_DIM, make_env, prepare_env
from cfgrl.envs.meshes import DENSE_FACES
from cfgrl.errors import CfgrlError
from cfgrl.store import Store

pytestmark = pytest.mark.metaworld

SUITE, SEED, SIZE = "push-v3", 3, 64


def _cfg(**kw) -> EnvConfig:
    return EnvConfig(**{"name": "metaworld", "suite": SUITE, "benchmark_seed": SEED, "image_size": SIZE, **kw})


@pytest.fixture(scope="module")
def env():
    env = make_env(_cfg())
    yield env
    env.close()


def _raw_env(index: int):
    """Meta-World's own env for configuration ``index`` of MT1(SUITE, SEED), set up as its docs say."""
    import metaworld

    benchmark = metaworld.MT1(SUITE, seed=SEED)
    raw = benchmark.train_classes[SUITE]()
    raw.set_task(benchmark.train_tasks[index])
    obs, _ = raw.reset()
    return raw, obs, benchmark.train_tasks[index]


def test_the_backend_steps_as_the_raw_env_does(env):
    """Same configuration, same actions (the expert's, read from the raw env): same physics state,
    same state vector, same success step."""
    from metaworld.policies import ENV_POLICY_MAP

    raw, raw_obs, task = _raw_env(7)
    obs = env.reset(0, 7, seed=0)
    np.testing.assert_array_equal(env.init_config(0, 7), pickle.loads(task.data)["rand_vec"])
    expert = ENV_POLICY_MAP[SUITE]()
    ours_success = raw_success = None
    for t in range(150):
        np.testing.assert_array_equal(env._sim.data.qpos, raw.data.qpos, err_msg=f"qpos before step {t}")
        np.testing.assert_array_equal(env._sim.data.qvel, raw.data.qvel, err_msg=f"qvel before step {t}")
        np.testing.assert_array_equal(obs.state[[0, 1, 2, 6]], raw_obs[:4].astype(np.float32))
        assert not obs.state[[3, 4, 5, 7]].any()  # no orientation, nothing in the last slot: never objects or goals
        action = np.clip(expert.get_action(raw_obs), -1, 1).astype(np.float32)
        raw_obs, _, _, _, info = raw.step(action)
        result = env.step(np.array([*action[:3], 0, 0, 0, action[3]], np.float32), render=False)
        obs = result.obs
        if info["success"] and raw_success is None:
            raw_success = t
        if result.success and ours_success is None:
            ours_success = t
        if raw_success is not None:
            break
    assert raw_success is not None and ours_success == raw_success
    raw.close()


def test_init_states_are_reproducible_and_depend_on_the_benchmark_seed(env):
    """A configuration resets to the same scene in a fresh env as in one that played other episodes."""
    env.reset(0, 7, seed=0)
    for _ in range(12):
        for action in env.scripted_chunk(0.0, horizon=5):
            env.step(action, render=False)
    first = env.reset(0, 4, seed=1)
    other = make_env(_cfg())
    try:
        again = other.reset(0, 4, seed=99)  # the episode seed does not move the scene
        np.testing.assert_array_equal(again.state, first.state)
        for camera in env.camera_names:
            np.testing.assert_array_equal(again.images[camera], first.images[camera])
        assert other.init_config(0, 4) == env.init_config(0, 4)
    finally:
        other.close()
    assert env.init_config(0, 4) != env.init_config(0, 5)
    reseeded = make_env(_cfg(benchmark_seed=SEED + 1))
    assert reseeded.init_config(0, 4) != env.init_config(0, 4)
    reseeded.close()


def test_tasks_prompts_and_splits():
    mt10 = make_env(EnvConfig(name="metaworld", suite="MT10"))  # lists tasks without building the benchmark
    tasks = mt10.tasks()
    assert [t.prompt for t in tasks[:3]] == ["reach the goal", "push the puck to the goal", "pick up the puck and place it at the goal"]
    assert len(tasks) == 10 and {t.num_init_states for t in tasks} == {50} and {t.max_steps for t in tasks} == {200}
    assert len(make_env(EnvConfig(name="metaworld", suite="MT50")).tasks()) == 50
    assert make_env(_cfg(max_steps=500)).tasks()[0].max_steps == 500


def test_workers_use_the_configurations_built_by_the_main_process(monkeypatch):
    import cfgrl.envs.metaworld as mw

    prepared = prepare_env(_cfg())
    monkeypatch.setattr(mw, "build_configurations", lambda *a: pytest.fail("a worker built the benchmark again"))
    worker_env = make_env(_cfg(), prepared)
    assert worker_env.init_config(0, 2) == [float(v) for v in prepared.vectors[SUITE][2]]
    with pytest.raises(ValueError, match="configurations of push-v3/3 for an env of push-v3/4"):
        make_env(_cfg(benchmark_seed=SEED + 1), prepared)


def _project(data, camera: str, point: np.ndarray, size: int, fovy: float) -> tuple[float, float]:
    """(row, column) of a world point in MuJoCo's rendered frame (top row first)."""
    cam = data.cam(camera)
    local = cam.xmat.reshape(3, 3).T @ (point - cam.xpos)  # camera frame: x right, y up, looking along -z
    focal = size / 2 / np.tan(np.radians(fovy) / 2)
    return size / 2 - focal * local[1] / -local[2], size / 2 + focal * local[0] / -local[2]


def test_corner_images_are_turned_upright(env):
    """The policy's corner image is the rendered frame turned by 180 degrees, and in it a point above
    the goal appears above the goal. The projection is checked against the pixels the goal marker covers."""
    obs = env.reset(0, 1, seed=0)
    model, data = env._sim.model, env._sim.data
    assert env.camera_names == ("corner", "gripperPOV")
    raw = {camera: env.raw_frame(camera) for camera in env.camera_names}
    np.testing.assert_array_equal(obs.images["corner"], raw["corner"][::-1, ::-1])
    np.testing.assert_array_equal(obs.images["gripperPOV"], raw["gripperPOV"])  # already upright
    goal = model.site("goal").id
    rgba = model.site_rgba[goal].copy()
    model.site_rgba[goal, 3] = 0  # hide the 2 cm goal marker: the pixels that change are the marker's
    hidden = env.raw_frame("corner")
    model.site_rgba[goal] = rgba
    rows, cols = np.nonzero(np.abs(raw["corner"].astype(int) - hidden).sum(-1) > 30)
    assert len(rows) >= 1  # the marker is visible at 64 px
    fovy = model.cam("corner").fovy[0]
    row, col = _project(data, "corner", data.site_xpos[goal], SIZE, fovy)
    assert abs(rows.mean() - row) < 2 and abs(cols.mean() - col) < 2
    above, _ = _project(data, "corner", data.site_xpos[goal] + [0, 0, 0.2], SIZE, fovy)
    assert above > row  # in the rendered frame "up" points down the image ...
    assert SIZE - 1 - above < SIZE - 1 - row  # ... and in the policy's image it points up


def test_coarse_meshes_change_the_drawing_not_the_physics(env):
    """env.mesh_grid_mm: the arm's meshes lose most faces, the others none, a whole expert episode (the hand pushing the
    puck: contacts) is bit-identical in physics and success, frames differ in a few pixels, and the
    store is told."""
    coarse = make_env(_cfg(mesh_grid_mm=10))
    try:
        first, other = env.reset(0, 2, seed=0), coarse.reset(0, 2, seed=0)
        shipped, fewer = env._sim.model.mesh_facenum, coarse._sim.model.mesh_facenum
        assert fewer.sum() < 0.3 * shipped.sum()
        dense = shipped > DENSE_FACES  # the arm's links; the table and the task's objects stay as shipped
        assert dense.sum() >= 8 and (fewer[dense] < shipped[dense]).all() and (fewer[~dense] == shipped[~dense]).all()
        puck = env._sim.data.body("obj").xpos.copy()
        for t in range(200):
            action = env.scripted_chunk(0.0, horizon=1)[0]
            ours, theirs = env.step(action, render=t % 5 == 4), coarse.step(action, render=t % 5 == 4)
            np.testing.assert_array_equal(coarse._sim.data.qpos, env._sim.data.qpos, err_msg=f"qpos after step {t}")
            np.testing.assert_array_equal(coarse._sim.data.qvel, env._sim.data.qvel, err_msg=f"qvel after step {t}")
            assert theirs.success == ours.success
            if ours.obs.images is not None:
                first, other = ours.obs, theirs.obs
            if ours.success:
                break
        assert ours.success and np.linalg.norm(env._sim.data.body("obj").xpos - puck) > 0.05  # the hand moved the puck
        changed = np.abs(first.images["corner"].astype(int) - other.images["corner"]).max(-1) > 16
        assert 0 < changed.mean() < 0.05  # the arm's silhouette moves by a pixel here and there
        assert "dense meshes on a 10 mm grid" in coarse.renderer and "grid" not in env.renderer
    finally:
        coarse.close()
    with pytest.raises(CfgrlError, match="env.mesh_grid_mm is for Meta-World and LIBERO only; the builtin env draws no meshes"):
        make_env(EnvConfig(mesh_grid_mm=10))


def test_bad_suite_task_camera_and_limits_give_one_line():
    with pytest.raises(CfgrlError, match=r"^env.suite 'MT11' is not a Meta-World suite; choose MT10, MT50 or one v3 task name \(assembly-v3, ") as err:
        make_env(_cfg(suite="MT11"))
    assert "\n" not in str(err.value)
    with pytest.raises(CfgrlError, match=r"env.cameras \['corner', 'wrist'\] is not valid for Meta-World; give distinct names among: corner, corner2"):
        make_env(_cfg(cameras=["corner", "wrist"]))
    with pytest.raises(CfgrlError, match=r"task 1 is not in Meta-World suite 'push-v3'; valid tasks: 0 \(push-v3\)$"):
        make_env(_cfg(tasks=[1]))
    with pytest.raises(CfgrlError, match="init state 50 is out of range; Meta-World tasks have configurations 0..49"):
        make_env(_cfg()).reset(0, 50, seed=0)
    with pytest.raises(CfgrlError, match="env.max_steps must be at most 500 for Meta-World"):
        make_env(_cfg(max_steps=501))
    with pytest.raises(CfgrlError, match="env.cameras is for Meta-World only; the builtin env's cameras are fixed"):
        make_env(EnvConfig(cameras=["corner"]))


def test_mt50_with_the_tiny_presets_prompt_length_is_refused_before_collecting(tmp_path):
    """MT50 has tasks whose prompts share their first 32 bytes (pick-place and pick-place-wall): a
    policy reading 32 tokens could not tell them apart, so collect refuses in one line, writing nothing."""
    store_path = tmp_path / "mt50.zarr"
    args = ["collect", str(store_path), "--episodes", "2", "-o", "env.name=metaworld", "-o", "env.suite=MT50"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error: tasks 'pick up the puck and place it" in result.output and "max_token_len 32" in result.output
    assert not store_path.exists()


def test_the_noisy_expert_aims_at_a_wrong_place_with_probability_noise():
    from cfgrl.envs.metaworld import WRONG_PLACE, wrong_place

    assert wrong_place(0.0, 0.0) is None and wrong_place(0.4, 0.4) is None and wrong_place(0.4, 0.9) is None
    offset = wrong_place(0.4, 0.39)
    np.testing.assert_array_equal(offset, WRONG_PLACE)  # one fixed wrong place: a mode a policy can learn to avoid
    assert 0.10 <= np.linalg.norm(offset) <= 0.20  # far enough to miss a 2-5 cm object, near enough to stay on the table


def _expert_episode(env, noise: float, seed: int) -> bool:
    env.reset(0, 20, seed=seed)
    for _ in range(40):  # 200 steps
        for action in env.scripted_chunk(noise, horizon=5):
            if env.step(action, render=False).success:
                return True
    return False


def test_a_wrong_place_episode_fails_where_the_expert_succeeds(env):
    """Configuration 20 of push: the expert pushes the puck home; aiming 15 cm off (noise 1: every
    episode), it never touches the puck. Seeds only change the draws."""
    assert _expert_episode(env, 0.0, seed=0)
    assert not any(_expert_episode(env, 1.0, seed=s) for s in (0, 1))


def test_collected_scripted_episodes_replay_exactly_in_a_fresh_env(tmp_path):
    """`cfgrl collect --policy scripted:0.3` (Meta-World's expert, noisy), one group of K=2 in one
    worker, then both episodes are replayed from their recorded actions: same states, frames, rewards."""
    store_path = tmp_path / "mw.zarr"
    replan = 5
    args = ["collect", str(store_path), "--episodes", "2", "--workers", "1", "--policy", "scripted:0.3",
            "-o", "collect.group_size=2", "-o", "env.name=metaworld", "-o", f"env.suite={SUITE}",
            "-o", f"env.benchmark_seed={SEED}", "-o", f"env.image_size={SIZE}", "-o", "env.max_steps=120",
            "-o", "env.init_states=[5]", "-o", f"inference.replan_steps={replan}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.stdout}\n{result.exception}"

    store = Store(store_path)
    ep = store.episodes
    assert len(ep) == 2 and ep.seed[0] != ep.seed[1]
    assert store.layout.camera_names == ("corner", "gripperPOV") and store.layout.image_shape == (SIZE, SIZE, 3)
    assert not np.array_equal(store.episode_steps(0, "action")[:20], store.episode_steps(1, "action")[:20])  # noise differs per seed
    fresh = make_env(_cfg())
    try:
        # The worker played episode 0 then 1 in one simulator; the replay plays 1 in a fresh one, then 0.
        for episode in (1, 0):
            _replay(store, episode, fresh, replan)
    finally:
        fresh.close()


def _replay(store: Store, episode: int, env, replan: int) -> None:
    """Play a stored episode's actions on ``env``: every state, frame, reward and done must match exactly."""
    row = store.episodes.iloc[episode]
    assert (row.env, row.suite, row.task_id, row.init_state_id) == ("metaworld", SUITE, 0, 5)
    assert row.policy_id == "scripted-noise0.30" and row.prompt == "push the puck to the goal"
    assert row.renderer == env.renderer and "shadows off" in row.renderer
    assert json.loads(row.init_config) == env.init_config(0, 5)
    actions = store.episode_steps(episode, "action")
    assert not actions[:, 3:6].any()  # the experts never use the rotation entries
    states, rewards, dones = (store.episode_steps(episode, name) for name in ("state", "reward", "done"))
    frame_steps = store.frame_steps()[row.frame_start : row.frame_start + row.frame_count].tolist()
    assert frame_steps == list(range(0, len(actions), replan))  # the query steps
    obs = env.reset(int(row.task_id), int(row.init_state_id), int(row.seed))
    for t, action in enumerate(actions):
        np.testing.assert_array_equal(states[t], obs.state, err_msg=f"episode {episode}: state before step {t}")
        if t in frame_steps:
            frame = frame_steps.index(t) + int(row.frame_start)
            images = env.render()
            for camera in env.camera_names:
                np.testing.assert_array_equal(np.asarray(store.frames(camera)[frame]), images[camera],
                                              err_msg=f"episode {episode}: {camera} at step {t}")
        step = env.step(action, render=False)
        assert rewards[t] == step.reward and dones[t] == step.success
        obs = step.obs
    assert bool(row.success) == bool(dones[-1]) and row.length == len(actions)


def test_state_layout_matches_libero():
    from cfgrl.envs.metaworld import our_action, sim_action, state_vector

    raw = np.arange(39, dtype=np.float64)
    np.testing.assert_array_equal(state_vector(raw), [0, 1, 2, 0, 0, 0, 3, 0])
    assert state_vector(raw).shape == (STATE_DIM,)
    moved = sim_action(np.array([0.1, -2, 0.3, 9, 9, 9, 1]))
    assert moved.dtype == np.float32  # as Meta-World's action space: its arm scales actions in their dtype
    np.testing.assert_array_equal(moved, np.array([0.1, -1, 0.3, 1], np.float32))
    np.testing.assert_array_equal(sim_action(our_action(np.array([0.5, 0.25, -0.5, -1]))), [0.5, 0.25, -0.5, -1])


def test_the_pipeline_runs_on_metaworld(tmp_path):
    """collect (noisy experts) -> label -> train a fresh tiny policy -> evaluate with w chosen on a
    validation configuration: the stages take Meta-World as they take the built-in env."""
    common = ["-o", "env.name=metaworld", "-o", f"env.suite={SUITE}", "-o", f"env.benchmark_seed={SEED}",
              "-o", f"env.image_size={SIZE}", "-o", "env.max_steps=120", "-o", "env.init_states=[20-21]",
              "-o", "cfgrl.label_source=window_return", "-o", "cfgrl.zero_variance_groups=keep"]
    store, run = str(tmp_path / "mw.zarr"), tmp_path / "run"

    def cfgrl(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, *common])
        assert result.exit_code == 0, f"{result.stdout}\n{result.exception}"
        return result.stdout

    cfgrl("collect", store, "--episodes", "2", "--workers", "1", "--policy", "scripted:0.3", "-o", "collect.group_size=2")
    assert "windows" in cfgrl("label", store)
    cfgrl("train", store, "--labels", store, "--out", str(run), "-o", "train.steps=2", "-o", "train.batch_size=4",
          "-o", "train.save_every=2")
    cfgrl("evaluate", str(run / "policy"), "--out", str(tmp_path / "eval"), "-o", "evaluate.init_states=[0]",
          "-o", "evaluate.validation_init_states=[10]", "-o", "evaluate.cfg_scales=[1.0,2.0]")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["chosen_cfg_scale"] in (1.0, 2.0)
    assert {(r["split"], r["arm"]) for r in results["rows"] if r["scope"] == "overall"} == {
        (split, arm) for split in ("test", "validation") for arm in ("w=1", "w=2")}


def test_export_fps_is_the_simulators_control_frequency(env):
    """`cfgrl export-dataset` writes lerobot's fps from a table; one env step is frame_skip MuJoCo steps."""
    from cfgrl.lerobot_data.export import CONTROL_HZ

    env.reset(0, 0, seed=0)
    seconds_per_step = env._sim.model.opt.timestep * env._sim.frame_skip
    assert round(1 / seconds_per_step, 6) == CONTROL_HZ["metaworld"]
