"""LIBERO's drawn layouts (init state ids from 50 up, ``cfgrl.envs.libero_layouts``) on the real simulator."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import EnvConfig
from cfgrl.envs import make_env
from cfgrl.envs.libero_layouts import FIXED_INIT_STATES, draw_layout
from cfgrl.errors import CfgrlError
from cfgrl.store import Store

pytestmark = pytest.mark.libero


@pytest.fixture(scope="module")
def libero():
    env = make_env(EnvConfig(name="libero", suite="libero_spatial", image_size=32))
    yield env
    env.close()


def movable_positions(env, state) -> dict[str, np.ndarray]:
    """Each movable object's (x, y, z) in a flattened simulator state."""
    sim = env._sim.env
    sim.sim.set_state_from_flattened(np.asarray(state))
    sim.sim.forward()
    return {name: sim.sim.data.body_xpos[sim.sim.model.body_name2id(obj.root_body)].copy() for name, obj in sim.objects_dict.items()}


def test_a_layout_is_a_function_of_its_seed_alone(libero):
    first = np.array(libero.init_config(0, 50))
    other = np.array(libero.init_config(0, 51))
    libero.reset(0, 3, seed=9)
    libero._layouts.clear()  # draw again, after other resets: nothing of the simulator's history enters
    np.testing.assert_array_equal(libero.init_config(0, 50), first)
    assert np.abs(first - other).max() > 1e-3
    reseeded = make_env(EnvConfig(name="libero", suite="libero_spatial", image_size=32, benchmark_seed=1))
    try:
        assert np.abs(np.array(reseeded.init_config(0, 50)) - first).max() > 1e-3
    finally:
        reseeded.close()


def sampled_box(sampler, obj) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) a table region sampler draws an object's centre from: the BDDL region, shrunk by the
    object's radius where it keeps the object inside (a region narrower than the object then widens:
    numpy's uniform takes its bounds either way round), moved by the sampler's reference point."""
    (x0, x1), (y0, y1) = sampler.x_ranges[0], sampler.y_ranges[0]
    r = obj.horizontal_radius if sampler.ensure_object_boundary_in_range else 0.0
    (x0, x1), (y0, y1) = sorted((x0 + r, x1 - r)), sorted((y0 + r, y1 - r))
    ref = sampler.reference_pos
    return x0 + ref[0], x1 + ref[0], y0 + ref[1], y1 + ref[1]


def test_layouts_lie_in_the_benchmark_s_regions_and_are_never_a_fixed_init_state(libero):
    libero.reset(0, 0, seed=0)
    sim = libero._sim.env
    boxes = {name: sampled_box(sampler, sim.objects_dict[name])
             for name, sampler in sim.placement_initializer.samplers.items() if name in sim.objects_dict}
    assert len(boxes) == 5  # both bowls, the plate, the cookie box, the ramekin
    fixed = [movable_positions(libero, s) for s in libero._task_init_states(0)]
    for init in range(FIXED_INIT_STATES, FIXED_INIT_STATES + 8):
        positions = movable_positions(libero, libero.init_config(0, init))
        for obj, (x0, x1, y0, y1) in boxes.items():
            x, y = positions[obj][:2]
            assert x0 - 1e-9 <= x <= x1 + 1e-9 and y0 - 1e-9 <= y <= y1 + 1e-9, (init, obj)
        nearest = min(max(np.abs(positions[o] - f[o]).max() for o in positions) for f in fixed)
        assert nearest > 1e-3, init


def test_reset_sets_the_layout_its_init_config_records(libero):
    libero.reset(0, 57, seed=4)
    np.testing.assert_array_equal(libero._sim.get_sim_state(), libero.init_config(0, 57))
    assert libero.init_config(0, 49) == []  # a fixed init state: the id says it all
    with pytest.raises(CfgrlError, match="init state 1000000 is out of range; task 0 of libero_spatial has 0..49 "
                                         "\\(the benchmark's\\) and 50..999999 \\(layouts drawn from its regions\\)"):
        libero.init_config(0, 1_000_000)


def test_a_layout_the_sampler_cannot_place_is_one_clear_error(libero):
    """Every table region shrunk onto one point: the objects cannot all be placed without overlapping."""
    libero.reset(0, 0, seed=0)
    samplers = libero._sim.env.placement_initializer.samplers.values()
    saved = [(s.x_ranges, s.y_ranges) for s in samplers]
    try:
        for s in samplers:
            s.x_ranges, s.y_ranges = [[0.0, 0.0]], [[0.0, 0.0]]
        with pytest.raises(CfgrlError, match="LIBERO cannot place the objects of task 0 layout 50: its placement sampler gave up"):
            draw_layout(libero._sim, 1, "task 0 layout 50")
    finally:
        for s, (x, y) in zip(samplers, saved):
            s.x_ranges, s.y_ranges = x, y


@pytest.mark.slow
def test_collect_records_a_drawn_layout_and_its_episodes_replay_from_the_store(libero, tmp_path):
    path = tmp_path / "drawn.zarr"
    args = ["collect", str(path), "--policy", "scripted:0", "--episodes", "2", "--workers", "1", "-o", "collect.group_size=2",
            "-o", "env.name=libero", "-o", "env.suite=libero_spatial", "-o", "env.image_size=32", "-o", "env.max_steps=30",
            "-o", "env.tasks=[0]", "-o", "env.init_states=[120]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception}"
    store = Store(path)
    row = store.episodes.iloc[0]
    assert int(row.init_state_id) == 120
    np.testing.assert_array_equal(np.array(__import__("json").loads(row.init_config)), libero.init_config(0, 120))
    states, actions = store.episode_steps(0, "state"), store.episode_steps(0, "action")
    obs = libero.reset(0, 120, int(row.seed))
    for t, action in enumerate(actions):
        np.testing.assert_allclose(states[t], obs.state, atol=1e-6, err_msg=f"state before step {t}")
        obs = libero.step(action, render=False).obs
