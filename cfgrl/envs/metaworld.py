"""The ``metaworld`` backend: Meta-World v3 (a Sawyer arm on MuJoCo) behind ``cfgrl.envs.base.Env``.

Suites (``env.suite``): ``MT10`` (default), ``MT50``, or one v3 task name (``MT1``). An init state
is (benchmark, ``env.benchmark_seed``, task, index into that task's 50 fixed configurations):
Meta-World draws the configurations (object and goal positions, its ``rand_vec``) when the benchmark
is built, from the seed and from every earlier task's draws, and ignores ``reset(seed=...)``. So the
configurations are built once per process (``build_configurations``; ~7 s for MT10, ~27 s for MT50),
handed to each worker by the rollout engine (``prepare``), and every episode's configuration vector
is recorded in the store (``init_config``). Convention per task: configurations 0-9 test, 10-19
validation, 20-49 training (``SPLITS``).

What the policy sees: two cameras (default ``corner``, turned upright, and ``gripperPOV``) rendered
only when asked, an 8-d state laid out like LIBERO's (hand xyz, 3 zeros for the orientation, the
gripper opening, 0) and never the object or goal positions of Meta-World's 39-d observation.
Actions keep LIBERO's 7-d layout (xyz deltas, 3 rotation entries this arm ignores, gripper last:
+1 closes); Meta-World receives the 4 it uses. Success: Meta-World's ``info["success"]`` at any step
ends the episode (its success can turn back to 0 later). Episodes are deterministic given the
configuration; rollouts of one group differ only by the policy's noise.

Rendering on a CPU: the scene defaults (4096-px shadow maps, reflections, 4x offscreen multisampling)
cost 100-370 ms per frame under Mesa; ``FAST_RENDER`` turns them off (~10-25 ms at 64 px, measured),
and the store's ``renderer`` column says so. What remains is the arm's 67k triangles:
``env.mesh_grid_mm`` draws coarser copies of its meshes (``cfgrl.envs.meshes``), also recorded.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfgrl.config import EnvConfig
from cfgrl.envs.base import ACTION_DIM, STATE_DIM, Observation, StepResult, TaskInfo, check_env_limits, select_mujoco_gl, smoke_report
from cfgrl.envs.meshes import coarsen_dense_meshes
from cfgrl.errors import CfgrlError

BENCHMARKS = ("MT10", "MT50")  # or one task name: MT1
NUM_CONFIGURATIONS = 50  # Meta-World's fixed configurations per task
SPLITS = {"test": (0, 9), "validation": (10, 19), "train": (20, 49)}  # configuration ids, inclusive
DEFAULT_MAX_STEPS = 200  # the experts finish in 50-90 steps; Meta-World's own limit is 500
MAX_STEPS = 500
# Meta-World's cameras; the corner ones render upside down and are turned upright (see ``is_upside_down``).
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
DEFAULT_CAMERAS = ("corner", "gripperPOV")  # corner: the nearest view of the table (goal markers 4-8 px at 96 px)
FAST_RENDER = "shadows off, reflectance off, offscreen multisampling off"
SETUP_HINT = "run scripts/setup_metaworld.sh .venv"
_EXPERT_SALT = 0x3E7A  # keeps the scripted expert's noise apart from other uses of the episode seed
# The scripted expert's NOISE (``--policy scripted:NOISE``), per episode: with probability NOISE it
# aims at the wrong place, the object and the goal moved by WRONG_PLACE (metres, along the table): one
# fixed wrong way of doing each task that a policy can see and learn to avoid, like the built-in expert's
# wrong ball. Any NOISE > 0 also adds Gaussian jitter of std JITTER to its 4 numbers: the corrections
# that follow are recovery data for a BC policy. (A direction drawn per episode, with jitter of std
# JITTER * NOISE, gave BC bases of 11-13% from demonstrations 59-72% successful; see the README.)
WRONG_PLACE = (0.15, 0.0)
JITTER = 0.1
_OBJECT_XY, _GOAL_XY = slice(4, 6), slice(36, 38)  # in Meta-World's 39-d observation: the first object's and the goal's x, y

# One fixed prompt per task, every v3 task.
PROMPTS = {
    "assembly-v3": "put the ring on the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button behind the wall from the top",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button of the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door",
    "hand-insert-v3": "put the gripper into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "push the bottle with the stick",
    "stick-pull-v3": "pull the bottle with the stick",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach the goal",
    "reach-wall-v3": "reach the goal behind the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
}


def _env_dict() -> Any:
    """Meta-World's task tables, imported once the GL back-end is chosen."""
    select_mujoco_gl("Meta-World")
    try:
        import metaworld.env_dict as env_dict
    except ImportError:
        raise CfgrlError(f"Meta-World is not installed in this Python; {SETUP_HINT}") from None
    return env_dict


def suite_tasks(suite: str) -> tuple[str, ...]:
    """The task names of a suite, in the benchmark's order, without building the benchmark."""
    if suite in BENCHMARKS:
        return tuple(getattr(_env_dict(), f"{suite}_V3"))
    if suite in PROMPTS:
        return (suite,)
    raise CfgrlError(f"env.suite '{suite}' is not a Meta-World suite; choose MT10, MT50 or one v3 task name "
                     f"({', '.join(PROMPTS)})")


@dataclass(frozen=True)
class Configurations:
    """The fixed configurations (Meta-World's ``rand_vec``) of every task of one benchmark and seed."""

    suite: str
    seed: int
    vectors: dict[str, np.ndarray]  # task name -> (NUM_CONFIGURATIONS, d) float64


@functools.lru_cache(maxsize=4)
def build_configurations(suite: str, seed: int) -> Configurations:
    """Build the benchmark (``MT10(seed)``, ``MT50(seed)`` or ``MT1(name, seed)``) and keep its configurations."""
    suite_tasks(suite)  # one line for a bad suite name
    import metaworld

    benchmark = metaworld.MT1(suite, seed=seed) if suite in PROMPTS else getattr(metaworld, suite)(seed=seed)
    vectors: dict[str, list[np.ndarray]] = {}
    for task in benchmark.train_tasks:
        vectors.setdefault(task.env_name, []).append(pickle.loads(task.data)["rand_vec"])
    return Configurations(suite, seed, {name: np.asarray(vecs, np.float64) for name, vecs in vectors.items()})


def prepare(cfg: EnvConfig) -> Configurations:
    """What the rollout engine builds once in its own process and hands to every worker."""
    return build_configurations(cfg.suite, cfg.benchmark_seed)


def check_cameras(cameras: list[str] | None) -> tuple[str, ...]:
    names = tuple(cameras) if cameras is not None else DEFAULT_CAMERAS
    unknown = [c for c in names if c not in CAMERAS]
    if unknown or not names or len(set(names)) != len(names):
        raise CfgrlError(f"env.cameras {list(names)} is not valid for Meta-World; give distinct names among: {', '.join(CAMERAS)}")
    return names


def state_vector(raw_obs: np.ndarray) -> np.ndarray:
    """The 8-d state from Meta-World's 39-d observation: hand xyz, 3 zeros, gripper opening, 0."""
    state = np.zeros(STATE_DIM, np.float32)
    state[:3] = raw_obs[:3]
    state[6] = raw_obs[3]
    return state


def sim_action(action: np.ndarray) -> np.ndarray:
    """Meta-World's 4-d action (xyz deltas, gripper effort) from our 7-d one, clipped as the arm applies it."""
    action = np.asarray(action, np.float64)
    if action.shape != (ACTION_DIM,) or not np.all(np.isfinite(action)):
        raise ValueError(f"a Meta-World action is {ACTION_DIM} finite numbers (xyz, 3 ignored, gripper), got shape {action.shape}")
    # float32, as Meta-World's own action space: its arm scales the action in the action's dtype.
    return np.clip(action[[0, 1, 2, 6]], -1.0, 1.0).astype(np.float32)


def our_action(sim: np.ndarray) -> np.ndarray:
    """The inverse of ``sim_action``: Meta-World's 4 numbers in LIBERO's 7-d layout."""
    action = np.zeros(ACTION_DIM, np.float32)
    action[[0, 1, 2, 6]] = sim
    return action


def is_upside_down(data: Any, camera: str) -> bool:
    """Whether a camera's image-up axis points down in the world (Meta-World's corner cameras do)."""
    up = data.cam(camera).xmat.reshape(3, 3)[:, 1]  # camera frame: x right, y up, z backwards
    return bool(up[2] < 0)


def wrong_place(noise: float, draw: float) -> np.ndarray | None:
    """The (x, y) offset this episode's expert aims off by (``WRONG_PLACE``), or None (probability
    1 - ``noise``); ``draw``: a uniform in [0, 1) drawn at reset."""
    return np.array(WRONG_PLACE) if draw < noise else None


def _displaced(raw: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Meta-World's observation with the object and the goal moved by ``offset``: what a wrong-place
    expert acts on (each expert reads its object at 4:7 and its goal at 36:39)."""
    seen = raw.copy()
    seen[_OBJECT_XY] += offset
    seen[_GOAL_XY] += offset
    return seen


class MetaWorldEnv:
    """The ``metaworld`` backend of ``cfgrl.envs.base.Env``: one simulator per task, built when first reset."""

    name = "metaworld"
    num_wait_steps = 0

    def __init__(self, cfg: EnvConfig, configurations: Configurations | None = None):
        check_env_limits(cfg, "Meta-World")
        if cfg.max_steps is not None and cfg.max_steps > MAX_STEPS:
            raise CfgrlError(f"env.max_steps must be at most {MAX_STEPS} for Meta-World (its own limit), got {cfg.max_steps}")
        self.suite = cfg.suite
        self.seed = cfg.benchmark_seed
        self._names = suite_tasks(cfg.suite)
        self.camera_names = check_cameras(cfg.cameras)
        self.image_size = cfg.image_size
        self.max_steps = cfg.max_steps or DEFAULT_MAX_STEPS
        self.mesh_grid = cfg.mesh_grid_mm / 1000.0
        coarse = f", dense meshes on a {cfg.mesh_grid_mm:g} mm grid" if self.mesh_grid else ""
        self.renderer = f"{select_mujoco_gl('Meta-World')} ({FAST_RENDER}{coarse})"
        self.wait_action = our_action(np.array([0.0, 0.0, 0.0, -1.0]))  # unused: no wait steps
        if configurations is not None and (configurations.suite, configurations.seed) != (self.suite, self.seed):
            raise ValueError(f"configurations of {configurations.suite}/{configurations.seed} for an env of {self.suite}/{self.seed}")
        self._configurations = configurations
        # Every task's simulator stays open once built (switching costs 0.6-1 s, a reset 25-100 ms):
        # task id -> (Meta-World's env, its renderer, cameras turned by 180 degrees, the task's expert).
        self._opened: dict[int, tuple[Any, Any, set[str], Any]] = {}
        self._sim: Any = None  # Meta-World's env of task self._sim_task
        self._sim_task: int | None = None
        self._renderer: Any = None
        self._turned: set[str] = set()  # cameras whose frames are turned by 180 degrees
        self._raw: np.ndarray | None = None  # Meta-World's last observation (the scripted expert reads it)
        self._expert: Any = None
        self._expert_rng: np.random.Generator | None = None
        self._expert_draw = 0.0
        for task_id in cfg.tasks or []:
            self._check_task(task_id)

    def tasks(self) -> list[TaskInfo]:
        return [TaskInfo(task_id=i, prompt=PROMPTS[name], num_init_states=NUM_CONFIGURATIONS, max_steps=self.max_steps)
                for i, name in enumerate(self._names)]

    def check_episode(self, task_id: int, init_state_id: int) -> None:
        """Raise ``CfgrlError`` for a task or configuration this suite does not have."""
        self._check_task(task_id)
        if not 0 <= init_state_id < NUM_CONFIGURATIONS:
            raise CfgrlError(f"init state {init_state_id} is out of range; Meta-World tasks have configurations 0..{NUM_CONFIGURATIONS - 1}")

    def init_config(self, task_id: int, init_state_id: int) -> list[float]:
        self.check_episode(task_id, init_state_id)
        return [float(v) for v in self._vectors(task_id)[init_state_id]]

    def reset(self, task_id: int, init_state_id: int, seed: int) -> Observation:
        """Set configuration ``init_state_id`` of the task and reset; ``seed`` only seeds the scripted expert's noise."""
        self.check_episode(task_id, init_state_id)
        if self._sim_task != task_id:
            self._open_task(task_id)
        import mujoco
        from metaworld.types import Task

        name = self._names[task_id]
        data = {"rand_vec": self._vectors(task_id)[init_state_id].copy(), "env_cls": type(self._sim), "partially_observable": False}
        self._sim.set_task(Task(env_name=name, data=pickle.dumps(data)))
        self._raw, _ = self._sim.reset()
        # Recompute what is derived from the state (the site positions drawn in the images, 0.1 mm
        # apart otherwise): without it a reused simulator's first frame kept a trace of its previous
        # episode. The physical state is untouched, and every Meta-World step ends the same way.
        mujoco.mj_forward(self._sim.model, self._sim.data)
        self._expert_rng = np.random.default_rng([_EXPERT_SALT, seed])
        self._expert_draw = float(self._expert_rng.random())  # whether this episode's expert aims at the wrong place
        return Observation(images=self.render(), state=state_vector(self._raw), prompt=PROMPTS[name])

    def step(self, action: np.ndarray, render: bool) -> StepResult:
        if self._sim is None:
            raise RuntimeError("MetaWorldEnv.step() before reset(): reset a task first")
        self._raw, _, _, _, info = self._sim.step(sim_action(action))
        success = bool(info["success"])
        obs = Observation(images=self.render() if render else None, state=state_vector(self._raw),
                          prompt=PROMPTS[self._names[self._sim_task]])
        return StepResult(obs=obs, reward=1.0 if success else 0.0, success=success)

    def render(self) -> dict[str, np.ndarray]:
        """Every camera as the policy sees it: uint8 (S, S, 3), upside-down cameras turned by 180 degrees."""
        images = {}
        for camera in self.camera_names:
            frame = self.raw_frame(camera)
            images[camera] = np.ascontiguousarray(frame[::-1, ::-1]) if camera in self._turned else frame
        return images

    def raw_frame(self, camera: str) -> np.ndarray:
        """One camera as MuJoCo's renderer returns it (top row first)."""
        self._renderer.update_scene(self._sim.data, camera=camera)
        return self._renderer.render()

    def scripted_chunk(self, noise: float, horizon: int = 50) -> np.ndarray:
        """Meta-World's own expert for the task at ``noise`` (``WRONG_PLACE`` and ``JITTER`` above).

        The expert reads the full observation each step, so the chunk is planned by playing it on this
        simulator and restoring the state afterwards: executing the chunk then replays the same steps.
        """
        if self._sim is None:
            raise RuntimeError("scripted_chunk() before reset()")
        saved_physics, saved_attrs, saved_raw = self._physics_state(), dict(vars(self._sim)), self._raw
        chunk = np.zeros((horizon, ACTION_DIM), np.float32)
        raw = self._raw
        offset = wrong_place(noise, self._expert_draw)
        for i in range(horizon):
            seen = raw if offset is None else _displaced(raw, offset)
            wanted = self._expert.get_action(seen) + self._expert_rng.normal(0.0, JITTER if noise > 0 else 0.0, size=4)
            chunk[i] = our_action(np.clip(wanted, -1.0, 1.0))  # float32, exactly what the engine executes
            raw, *_ = self._sim.step(sim_action(chunk[i]))
        self._set_physics_state(saved_physics)
        vars(self._sim).clear()
        vars(self._sim).update(saved_attrs)
        self._raw = saved_raw
        return chunk

    def close(self) -> None:
        for sim, renderer, _, _ in self._opened.values():
            renderer.close()
            sim.close()
        self._opened.clear()
        self._sim, self._sim_task, self._renderer = None, None, None

    def _check_task(self, task_id: int) -> None:
        if not 0 <= task_id < len(self._names):
            valid = ", ".join(f"{i} ({name})" for i, name in enumerate(self._names))
            raise CfgrlError(f"task {task_id} is not in Meta-World suite '{self.suite}'; valid tasks: {valid}")

    def _vectors(self, task_id: int) -> np.ndarray:
        if self._configurations is None:  # a single env outside the engine (tests, benchmarks) builds them itself
            self._configurations = build_configurations(self.suite, self.seed)
        return self._configurations.vectors[self._names[task_id]]

    def _open_task(self, task_id: int) -> None:
        if task_id not in self._opened:
            self._opened[task_id] = self._build_task(self._names[task_id])
        self._sim, self._renderer, self._turned, self._expert = self._opened[task_id]
        self._sim_task = task_id

    def _build_task(self, name: str) -> tuple[Any, Any, set[str], Any]:
        import mujoco
        from metaworld.policies import ENV_POLICY_MAP

        sim = _env_dict().ALL_V3_ENVIRONMENTS[name]()
        sim.max_path_length = MAX_STEPS + 1_000_000  # the engine ends episodes; planning may look past 500
        model = sim.model
        model.light_castshadow[:] = 0  # FAST_RENDER: only what is drawn changes, not the physics
        model.mat_reflectance[:] = 0
        model.vis.quality.offsamples = 0  # read when the renderer's GL context is made, just below
        if self.mesh_grid:
            coarsen_dense_meshes(model, self.mesh_grid)  # the context uploads the meshes, so before it
        renderer = mujoco.Renderer(model, self.image_size, self.image_size)
        turned = {camera for camera in self.camera_names if is_upside_down(sim.data, camera)}
        return sim, renderer, turned, ENV_POLICY_MAP[name]()

    def _physics_state(self) -> np.ndarray:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self._sim.model, spec))
        mujoco.mj_getState(self._sim.model, self._sim.data, state, spec)
        return state

    def _set_physics_state(self, state: np.ndarray) -> None:
        import mujoco

        mujoco.mj_setState(self._sim.model, self._sim.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self._sim.model, self._sim.data)


def check_install(suite: str = "MT10") -> str:
    """Build a real Meta-World env, reset, render, step once: a one-line report."""
    return smoke_report(MetaWorldEnv(EnvConfig(name="metaworld", suite=suite, image_size=64)), "Meta-World", suite)
