"""The ``libero`` backend: the LIBERO benchmark (robosuite on MuJoCo) behind ``cfgrl.envs.base.Env``.

Conventions are PI0's LIBERO ones (openpi): both cameras rotated by 180 degrees, state = eef position
+ axis-angle of the eef quaternion + the two gripper finger positions, 7-d delta-pose actions with the
gripper last (-1 open, +1 close), ``NUM_WAIT_STEPS`` "do nothing" steps while the objects settle,
the benchmark's own 50 init states per task (ids 0-49; ids from 50 up are layouts drawn from its
placement regions, ``cfgrl.envs.libero_layouts``), reward 1.0 only on success, and success = LIBERO's done.

Rendering is the dominant cost on a CPU (llvmpipe), so the simulator is built WITHOUT camera
observations and ``render`` draws the two cameras only when asked: at reset and at the steps whose
images the policy uses. ``env.mesh_grid_mm`` > 0 draws for the CPU (``draw_for_cpu``): coarser meshes,
no reflections, no multisampling, ~6x cheaper frames at 128 px that a policy trained on LIBERO's own renders has
never seen, so it is for policies trained and tested with it (the CPU demonstration). Set-up (``scripts/setup_libero.sh``) installs LIBERO and its scene assets.
Before LIBERO is imported this module chooses the GL back-end (``MUJOCO_GL``, default ``egl``) and
points ``LIBERO_CONFIG_PATH`` at a config it writes beside the installed package, so importing LIBERO
never asks an interactive question nor writes into the home directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cfgrl import atomic
from cfgrl.config import EnvConfig
from cfgrl.envs.base import ACTION_DIM, STATE_DIM, Observation, StepResult, TaskInfo, check_env_config, select_mujoco_gl, smoke_report
from cfgrl.envs.libero_layouts import DRAWN_INIT_STATES, draw_layout, is_drawn, layout_seed
from cfgrl.envs.meshes import coarsen_dense_meshes
from cfgrl.errors import CfgrlError

# openpi's LIBERO step limits (policy steps, wait steps excluded): the longest demonstration of each suite plus margin.
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SUITES = tuple(SUITE_MAX_STEPS)
NUM_WAIT_STEPS = 10  # objects fall onto the table for a few steps after an init state is set
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> robosuite camera
SETUP_HINT = "run scripts/setup_libero.sh .venv (installs LIBERO and its scene assets)"
_EXPERT_SALT = 0x11BE  # keeps the scripted expert's noise apart from other uses of the episode seed
CPU_DRAWING = "reflectance off, offscreen multisampling off"


def configure_process() -> str:
    """Set the process-wide variables LIBERO and MuJoCo read at import time; returns the renderer.

    Must run before ``mujoco`` is imported: MuJoCo picks its GL back-end once, at import.
    """
    renderer = select_mujoco_gl("LIBERO")
    if "LIBERO_CONFIG_PATH" in os.environ:
        if not (Path(os.environ["LIBERO_CONFIG_PATH"]) / "config.yaml").is_file():
            raise CfgrlError(
                f"LIBERO_CONFIG_PATH={os.environ['LIBERO_CONFIG_PATH']} has no config.yaml; unset it to use the installed package's files"
            )
    else:
        os.environ["LIBERO_CONFIG_PATH"] = str(_write_libero_config(_libero_package_dir()))
    return renderer


def _libero_package_dir() -> Path:
    """``.../site-packages/libero/libero`` of the installed hf-libero, found without importing it."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise CfgrlError(f"LIBERO is not installed in this Python ({sys.prefix}); {SETUP_HINT}")
    package = Path(next(iter(spec.submodule_search_locations))) / "libero"
    if not (package / "assets" / "scenes").is_dir():
        raise CfgrlError(f"LIBERO's scene assets are missing ({package / 'assets'}); {SETUP_HINT}")
    return package


def _write_libero_config(package: Path) -> Path:
    """LIBERO's config.yaml pointing at the package's own files; rewritten only when it differs.

    It lives beside the installed package (inside the virtual environment), never in the home directory.
    """
    paths = {
        "benchmark_root": package,
        "bddl_files": package / "bddl_files",
        "init_states": package / "init_files",
        "datasets": package.parent / "datasets",  # unused: cfgrl never reads LIBERO's demonstration files
        "assets": package / "assets",
    }
    text = yaml.safe_dump({key: str(path) for key, path in paths.items()})
    config_dir = package.parent / "cfgrl_libero_config"
    config = config_dir / "config.yaml"
    if not config.is_file() or config.read_text() != text:
        config_dir.mkdir(exist_ok=True)
        atomic.write_text(config, text)  # parallel workers: each writes aside, then renames
    return config_dir


def _import_libero() -> tuple[Any, Any, Any]:
    """(benchmark module, OffScreenRenderEnv, get_libero_path), imported quietly once the process is configured."""
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints banners and task orders on import
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    return benchmark, OffScreenRenderEnv, get_libero_path


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) of a unit quaternion in robosuite's (x, y, z, w) order."""
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)  # |sin(angle / 2)|
    if np.isclose(sin_half, 0.0):
        return np.zeros(3)  # no rotation: the axis is undefined
    return np.asarray(quat_xyzw[:3]) * (2.0 * np.arccos(w) / sin_half)


def state_vector(raw_obs: dict[str, np.ndarray]) -> np.ndarray:
    """PI0's 8-d LIBERO state from robosuite's observation dict."""
    state = np.concatenate(
        [raw_obs["robot0_eef_pos"], quat_to_axis_angle(raw_obs["robot0_eef_quat"]), raw_obs["robot0_gripper_qpos"]]
    ).astype(np.float32)
    assert state.shape == (STATE_DIM,)
    return state


class LiberoEnv:
    """The ``libero`` backend of ``cfgrl.envs.base.Env``: one simulator at a time, rebuilt when the task changes."""

    name = "libero"
    camera_names = tuple(CAMERAS)
    num_wait_steps = NUM_WAIT_STEPS

    def __init__(self, cfg: EnvConfig):
        check_env_config(cfg, SUITES, "LIBERO", meshes=True)
        self.suite = cfg.suite
        self.image_size = cfg.image_size
        self.max_steps = cfg.max_steps or SUITE_MAX_STEPS[cfg.suite]
        self.layout_seed = cfg.benchmark_seed  # seeds the layouts of init states >= 50 (cfgrl.envs.libero_layouts)
        self.wait_action = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)  # hold still, gripper open
        self.mesh_grid = cfg.mesh_grid_mm / 1000.0
        self.renderer = configure_process()
        if self.mesh_grid:
            self.renderer += f" ({CPU_DRAWING}, dense meshes on a {cfg.mesh_grid_mm:g} mm grid)"
        benchmark, self._env_class, get_libero_path = _import_libero()
        with contextlib.redirect_stdout(io.StringIO()):
            self._benchmark = benchmark.get_benchmark_dict()[cfg.suite]()
        self._bddl_dir = Path(get_libero_path("bddl_files"))
        self._init_states: dict[int, np.ndarray] = {}
        self._layouts: dict[tuple[int, int], np.ndarray] = {}  # (task, drawn init state id) -> its state
        self._sim: Any = None  # LIBERO's OffScreenRenderEnv of task self._sim_task
        self._sim_task: int | None = None
        self._expert: Any = None  # this episode's scripted expert, made at its first chunk (the scene settled)
        self._expert_rng: np.random.Generator | None = None
        self._expert_draw = 0.0
        for task_id in cfg.tasks or []:
            self._check_task(task_id)

    def tasks(self) -> list[TaskInfo]:
        return [
            TaskInfo(task_id=i, prompt=self._benchmark.get_task(i).language, num_init_states=len(self._task_init_states(i)),
                     max_steps=self.max_steps, drawn_init_states=DRAWN_INIT_STATES)
            for i in range(self._benchmark.n_tasks)
        ]

    def check_episode(self, task_id: int, init_state_id: int) -> None:
        """Raise ``CfgrlError`` for a task or init state this suite does not have."""
        self._check_task(task_id)
        count = len(self._task_init_states(task_id))
        if not 0 <= init_state_id < count + DRAWN_INIT_STATES:
            raise CfgrlError(f"init state {init_state_id} is out of range; task {task_id} of {self.suite} has 0..{count - 1} "
                             f"(the benchmark's) and {count}..{count + DRAWN_INIT_STATES - 1} (layouts drawn from its regions)")

    def reset(self, task_id: int, init_state_id: int, seed: int) -> Observation:
        """Reset the simulator, then set init state ``init_state_id``: the benchmark's (0-49) or a drawn layout.

        The simulator is built once per task with robosuite's soft reset: LIBERO's default hard reset
        re-parses the scene XML and rebuilds the simulator and its GL context on every episode (~3 s
        here), although the init state then overwrites the whole physical state anyway. A soft reset
        followed by ``set_init_state`` replays an episode exactly as a freshly built env does (tested).
        """
        init_state = self._init_state(task_id, init_state_id)  # opens the task; draws a layout once
        # LIBERO seeds numpy's global (32-bit) generator; episode seeds are wider. The init state fixes the scene.
        self._sim.seed(seed % 2**32)
        self._sim.reset()
        for robot in self._sim.env.robots:
            # The one piece of state a soft reset keeps: the gripper's smoothed command (robosuite
            # ramps it by a fixed speed per step), which only a rebuilt gripper model starts at zero.
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        raw = self._sim.set_init_state(init_state)
        self._expert, self._expert_rng = None, np.random.default_rng([_EXPERT_SALT, seed])
        self._expert_draw = float(self._expert_rng.random())  # whether this episode's expert goes for the wrong object
        return Observation(images=self.render(), state=state_vector(raw), prompt=self._prompt)

    def init_config(self, task_id: int, init_state_id: int) -> list[float]:
        """[] for the init states LIBERO ships (the id is enough); a drawn layout's flattened state.
        Drawing a layout not drawn yet resets the simulator: call it between episodes (``reset`` draws first)."""
        if not is_drawn(init_state_id):
            self.check_episode(task_id, init_state_id)
            return []
        return [float(v) for v in self._init_state(task_id, init_state_id)]

    def _init_state(self, task_id: int, init_state_id: int) -> np.ndarray:
        """The flattened simulator state of a fixed init state or of a drawn layout (drawn once, kept)."""
        self.check_episode(task_id, init_state_id)
        if self._sim_task != task_id:
            self._open_task(task_id)
        if not is_drawn(init_state_id):
            return self._task_init_states(task_id)[init_state_id]
        key = (task_id, init_state_id)
        if key not in self._layouts:
            seed = layout_seed(self.layout_seed, self.suite, task_id, init_state_id)
            what = f"{self.suite} task {task_id} layout {init_state_id} (env.benchmark_seed {self.layout_seed})"
            self._layouts[key] = draw_layout(self._sim, seed, what)
        return self._layouts[key]

    def step(self, action: np.ndarray, render: bool) -> StepResult:
        if self._sim is None:
            raise RuntimeError("LiberoEnv.step() before reset(): reset a task first")
        action = np.asarray(action, np.float64)
        if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
            raise ValueError(f"a LIBERO action is {ACTION_DIM} finite numbers, got shape {action.shape}")
        with one_forward_per_substep(self._sim.env.sim):
            raw, _, done, _ = self._sim.step(np.clip(action, -1.0, 1.0))
        success = bool(done)  # LIBERO's done is its success check (the time limit is the engine's)
        obs = Observation(images=self.render() if render else None, state=state_vector(raw), prompt=self._prompt)
        return StepResult(obs=obs, reward=1.0 if success else 0.0, success=success)

    def render(self) -> dict[str, np.ndarray]:
        """Both cameras as the policy sees them: uint8 (S, S, 3), rotated 180 degrees from the GL frame."""
        return {name: np.ascontiguousarray(self.raw_frame(camera)[::-1, ::-1]) for name, camera in CAMERAS.items()}

    def raw_frame(self, camera: str) -> np.ndarray:
        """One camera straight from MuJoCo's offscreen buffer (OpenGL's bottom-up rows; robosuite's default)."""
        size = self.image_size
        # robosuite draws with whatever GL context is current, which is the last one made when a worker
        # holds several envs (collect.envs_per_worker): make this simulator's own current first.
        self._sim.env.sim._render_context_offscreen.gl_ctx.make_current()
        return self._sim.env.sim.render(camera_name=camera, width=size, height=size, depth=False)

    def scripted_chunk(self, noise: float, horizon: int = 50) -> np.ndarray:
        """The scripted expert's next ``horizon`` actions (``cfgrl.envs.libero_expert``), planned from
        the simulator's privileged state; executing them all is what the next call assumes."""
        if self._sim is None:
            raise RuntimeError("scripted_chunk() before reset()")
        if self._expert is None:
            from cfgrl.envs.libero_expert import LiberoExpert

            self._expert = LiberoExpert(self._sim.env, noise, self._expert_draw, self._expert_rng)
        return self._expert.chunk(horizon)

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
        self._sim, self._sim_task = None, None

    def _check_task(self, task_id: int) -> None:
        if not 0 <= task_id < self._benchmark.n_tasks:
            names = ", ".join(f"{i} ({self._benchmark.get_task(i).language})" for i in range(self._benchmark.n_tasks))
            raise CfgrlError(f"task {task_id} is not in LIBERO suite '{self.suite}'; valid tasks: {names}")

    def _task_init_states(self, task_id: int) -> np.ndarray:
        """The benchmark's fixed init states of a task (pickles shipped inside the LIBERO package)."""
        if task_id not in self._init_states:
            self._init_states[task_id] = np.asarray(self._benchmark.get_task_init_states(task_id))
        return self._init_states[task_id]

    def _open_task(self, task_id: int) -> None:
        self.close()
        task = self._benchmark.get_task(task_id)
        with contextlib.redirect_stdout(io.StringIO()):
            self._sim = self._env_class(
                bddl_file_name=str(self._bddl_dir / task.problem_folder / task.bddl_file),
                camera_names=list(CAMERAS.values()), camera_heights=self.image_size, camera_widths=self.image_size,
                use_camera_obs=False,  # cameras are drawn by render(), only when asked
                ignore_done=True,  # episode length is the engine's business, not robosuite's horizon
                hard_reset=False,  # see reset()
            )
        if self.mesh_grid:
            draw_for_cpu(self._sim.env.sim, self.mesh_grid)
        self._sim_task = task_id
        self._prompt = task.language


@contextlib.contextmanager
def one_forward_per_substep(sim: Any) -> Iterator[None]:
    """Run robosuite's control step with MuJoCo's split step: the same state, bit for bit, for ~half the physics.

    Each of a control step's 25 substeps, robosuite calls ``mj_forward`` for its controller, again in
    the controller's ``update``, then ``mj_step``, which runs a third forward pass before integrating.
    MuJoCo's ``mj_step1`` (positions, velocities: all a controller reads) before the controller and
    ``mj_step2`` (actuation, acceleration, integration) after it is ``mj_step`` split in two (Euler
    only), so a substep costs one forward pass instead of three. Inside the step only: resets and
    ``set_init_state`` keep robosuite's whole ``mj_forward``.
    """
    import mujoco  # not at module level: configure_process() must choose the GL back-end first

    model, data = sim.model._model, sim.data._data
    if model.opt.integrator != mujoco.mjtIntegrator.mjINT_EULER:  # mj_step2 integrates with Euler only
        yield
        return
    current = False  # whether positions and velocities were computed since the last integration

    def forward() -> None:
        nonlocal current
        if not current:
            mujoco.mj_step1(model, data)
            current = True

    def step(with_udd: bool = True) -> None:
        nonlocal current
        mujoco.mj_step2(model, data)
        current = False

    sim.forward, sim.step = forward, step  # instance attributes shadow MjSim's methods
    try:
        yield
    finally:
        del sim.forward, sim.step


def draw_for_cpu(sim: Any, grid: float) -> None:
    """Make robosuite's offscreen renderer cheap on llvmpipe, which pays per triangle and per pass
    (at 128 px, measured: 4x multisampling ~2x a frame, the reflective floor and table a second drawing
    of the scene, 307k triangles where ~95k remain on a 5 mm grid). Physics is untouched."""
    model = sim.model._model
    coarsen_dense_meshes(model, grid)
    model.mat_reflectance[:] = 0
    model.vis.quality.offsamples = 0
    context = sim._render_context_offscreen  # made with the env: made again, it uploads the new meshes
    context.gl_ctx.make_current()
    context.con.free()
    context._set_mujoco_context_and_buffers()


def check_install(suite: str = "libero_spatial", image_size: int = 224) -> str:
    """Build a real LIBERO env, reset, render, step once: a one-line report (also warms numba's cache)."""
    return smoke_report(LiberoEnv(EnvConfig(name="libero", suite=suite, image_size=image_size)), "LIBERO", suite)
