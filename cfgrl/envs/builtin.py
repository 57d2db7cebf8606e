"""The built-in ``reach`` suite: a fast 2-D grasping world drawn with numpy.

Every scene holds four coloured balls on a table seen from above, one in each quarter of the table;
the tasks differ only by the prompt, which names a quarter ("grasp the top left ball", ...). An init
state fixes where each ball sits inside its quarter, which colour it has and where the effector
starts (near the centre); it is the same scene for every task. The ball positions are not in the
state, so a policy must read the prompt to know where to head and find the ball in the images to
grasp it. Success takes a sequence: move the effector over the named ball with the gripper open,
close the gripper on it (a grasp registers only when the gripper closes within reach of a ball) and
hold it for ``HOLD_STEPS`` steps. Grasping the wrong ball is recoverable: open the gripper, move on.

Why a quarter and not a colour: the prompt first named a colour ("grasp the red ball"), and a tiny
PI0 trained from scratch on a CPU never learnt to bind the colour word to the ball of that colour:
``scripts/first_heading.py`` found its first chunks heading for the named ball at about chance. A
policy that ignores the prompt picks the named ball by luck, and then CFGRL has no choice to
sharpen: the wrong-ball failure only gives RL labels something to improve on when the policy can
tell the balls apart by the prompt. The README's findings give the measurements.

Why these dynamics: smooth first-order velocity control, a generous grasp radius and well-separated
balls make the task learnable by a tiny vision-language policy imitating noisy demonstrations.

World units: the table is [-1, 1]^2; the effector moves at most ``MAX_SPEED`` per step. The episode
``seed`` jitters the start position and adds small velocity noise, so K rollouts from one init state
differ; everything is deterministic given (task_id, init_state_id, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cfgrl.config import EnvConfig
from cfgrl.envs.base import ACTION_DIM, Observation, StepResult, TaskInfo, check_env_config
from cfgrl.errors import CfgrlError

SUITES = ("reach",)
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 230), "yellow": (235, 200, 30)}
PLACES = ("top left", "top right", "bottom left", "bottom right")  # task i names the ball in quarter i
PLACE_CENTRES = np.array([[-0.5, 0.5], [0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
NUM_INIT_STATES = 500
# The scripted expert finishes within 20 steps at any noise (14 typical); like LIBERO's limits (about
# 2-3x a demonstration's length), 50 leaves a policy room to be slow or to recover from a fumble, while
# a stuck policy's failed episode does not fill the store with 80 steps of waiting.
DEFAULT_MAX_STEPS = 50

MAX_SPEED = 0.07  # world units per step at |action| = 1
VELOCITY_LAG = 0.4  # v <- lag * v + (1 - lag) * commanded velocity
GRIP_RATE = 0.5  # gripper closure change per step at |action[6]| = 1 (0 open .. 1 closed)
CLOSED = 0.75  # gripper closure at which it counts as closed
BALL_RADIUS = 0.15  # drawn radius
GRASP_RADIUS = 0.2  # effector-to-ball distance within which closing grasps the ball
HOLD_STEPS = 3  # steps the named ball must be held for success
START_JITTER = 0.05  # per-episode uniform jitter of the start position
VELOCITY_NOISE = 0.004  # per-step std of the velocity disturbance
WALL = 0.95  # the effector stays inside [-WALL, WALL]^2
PLACE_JITTER = 0.2  # a ball sits uniformly within this distance (per axis) of its quarter's centre
START_SPREAD = 0.15  # the effector starts uniformly within this distance (per axis) of the table centre
_LAYOUT_SALT = 0x5EAC4


@dataclass
class SimState:
    """The privileged state of one episode (the policy sees only images, prompt and ``state_vector``)."""

    pos: np.ndarray  # (2,) effector position
    vel: np.ndarray  # (2,) effector velocity
    grip: float  # closure, 0 open .. 1 closed
    balls: np.ndarray  # (4, 2) ball positions; ball i sits in quarter PLACES[i]
    colours: np.ndarray  # (4,) index into COLOURS of each ball's colour
    target: int  # index of the named ball (= the task id)
    held: int  # index of the held ball, -1 if none
    hold_steps: int  # consecutive steps the named ball has been held
    steps: int  # policy steps taken


def advance(sim: SimState, action: np.ndarray, disturbance: np.ndarray) -> SimState:
    """One control step; pure so the scripted expert can plan with the same dynamics."""
    a = np.clip(action, -1.0, 1.0)
    vel = VELOCITY_LAG * sim.vel + (1.0 - VELOCITY_LAG) * MAX_SPEED * a[:2] + disturbance
    pos = sim.pos + vel
    hit_wall = np.abs(pos) > WALL
    pos, vel = np.clip(pos, -WALL, WALL), np.where(hit_wall, 0.0, vel)
    grip = float(np.clip(sim.grip + GRIP_RATE * a[6], 0.0, 1.0))
    balls, held = sim.balls, sim.held
    if grip < CLOSED:
        held = -1  # opening drops whatever was held; the ball stays where it was released
    elif sim.grip < CLOSED:  # closing right now: grasp the nearest ball within reach
        dists = np.linalg.norm(balls - pos, axis=1)
        nearest = int(np.argmin(dists))
        held = nearest if dists[nearest] < GRASP_RADIUS else -1
    if held >= 0:
        balls = balls.copy()
        balls[held] = pos  # a held ball moves with the effector
    hold_steps = sim.hold_steps + 1 if held == sim.target else 0
    return replace(sim, pos=pos, vel=vel, grip=grip, balls=balls, held=held, hold_steps=hold_steps, steps=sim.steps + 1)


def is_success(sim: SimState) -> bool:
    return sim.hold_steps >= HOLD_STEPS


def initial_layout(init_state_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed init state ``init_state_id`` (shared by every task): ball positions (4, 2) in PLACES
    order, their colours (4,) and the effector's start (2,)."""
    rng = np.random.default_rng([_LAYOUT_SALT, init_state_id])
    balls = PLACE_CENTRES + rng.uniform(-PLACE_JITTER, PLACE_JITTER, size=PLACE_CENTRES.shape)
    colours = rng.permutation(len(COLOURS))
    start = rng.uniform(-START_SPREAD, START_SPREAD, size=2)
    return balls, colours, start


class Renderer:
    """Draws both cameras from precomputed pixel-centre grids (world coordinates per pixel)."""

    BACKGROUND = np.array([200, 196, 184], np.uint8)  # table
    OUTSIDE = np.array([70, 70, 70], np.uint8)  # beyond the table edge (wrist view only)
    EFFECTOR = np.array([25, 25, 25], np.uint8)
    WRIST_HALF_WIDTH = 0.5  # the wrist camera sees a 1x1 window centred on the effector

    def __init__(self, size: int):
        self.size = size
        centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # [-1, 1], left to right
        self.gx, self.gy = centres[None, :], -centres[:, None]  # image row 0 is the far edge (y = +1)
        self.table = np.broadcast_to(self.BACKGROUND, (size, size, 3)).copy()
        self.palette = np.array(list(COLOURS.values()), np.uint8)

    def _discs(self, img: np.ndarray, gx: np.ndarray, gy: np.ndarray, centres: np.ndarray, radius: float, colours) -> None:
        r2 = radius * radius
        for (cx, cy), colour in zip(centres, colours):
            img[(gx - cx) ** 2 + (gy - cy) ** 2 < r2] = colour

    def _balls_in_draw_order(self, sim: SimState) -> tuple[np.ndarray, np.ndarray]:
        """The held ball last, so it is drawn on top of anything it was carried over."""
        order = [i for i in range(len(sim.balls)) if i != sim.held] + ([sim.held] if sim.held >= 0 else [])
        return sim.balls[order], self.palette[sim.colours[order]]

    def agentview(self, sim: SimState) -> np.ndarray:
        img = self.table.copy()
        balls, colours = self._balls_in_draw_order(sim)
        self._discs(img, self.gx, self.gy, balls, BALL_RADIUS, colours)
        # The effector: a dark ring whose hole shrinks as the gripper closes.
        d2 = (self.gx - sim.pos[0]) ** 2 + (self.gy - sim.pos[1]) ** 2
        outer, inner = 0.11, 0.06 * (1.0 - sim.grip)
        img[(d2 < outer**2) & (d2 >= inner**2)] = self.EFFECTOR
        return img

    def wrist(self, sim: SimState) -> np.ndarray:
        gx = self.gx * self.WRIST_HALF_WIDTH + sim.pos[0]
        gy = self.gy * self.WRIST_HALF_WIDTH + sim.pos[1]
        img = self.table.copy()
        img[(np.abs(gx) > 1.0) | (np.abs(gy) > 1.0)] = self.OUTSIDE
        balls, colours = self._balls_in_draw_order(sim)
        self._discs(img, gx, gy, balls, BALL_RADIUS, colours)
        # Two jaws left and right of the centre; their gap closes with the gripper.
        s, mid = self.size, self.size // 2
        gap = max(1, int(round((1.0 - sim.grip) * s * 0.22)))
        thick, half_len = max(1, s // 32), max(2, s // 8)
        rows = slice(mid - half_len, mid + half_len)
        img[rows, max(0, mid - gap - thick) : mid - gap] = self.EFFECTOR
        img[rows, mid + gap : mid + gap + thick] = self.EFFECTOR
        return img


class BuiltinEnv:
    """The ``builtin`` backend of ``cfgrl.envs.base.Env``."""

    name = "builtin"
    camera_names = ("agentview", "wrist")
    renderer = "numpy"
    num_wait_steps = 0

    def __init__(self, cfg: EnvConfig):
        check_env_config(cfg, SUITES, "builtin")
        self.suite = cfg.suite
        self.image_size = cfg.image_size
        self.max_steps = cfg.max_steps or DEFAULT_MAX_STEPS
        self.wait_action = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)
        self._renderer = Renderer(cfg.image_size)
        self._tasks = [
            TaskInfo(task_id=i, prompt=f"grasp the {place} ball", num_init_states=NUM_INIT_STATES, max_steps=self.max_steps)
            for i, place in enumerate(PLACES)
        ]
        self._sim: SimState | None = None
        self._noise_rng: np.random.Generator | None = None
        self._expert_rng: np.random.Generator | None = None
        self._expert_draw = self._fumble_draw = 0.0
        self._fumbled = False

    def tasks(self) -> list[TaskInfo]:
        return list(self._tasks)

    def check_episode(self, task_id: int, init_state_id: int) -> None:
        """Raise ``CfgrlError`` for a task or init state this suite does not have."""
        if not 0 <= task_id < len(self._tasks):
            valid = ", ".join(f"{t.task_id} ({t.prompt})" for t in self._tasks)
            raise CfgrlError(f"task {task_id} is not in the builtin suite '{self.suite}'; valid tasks: {valid}")
        if not 0 <= init_state_id < NUM_INIT_STATES:
            raise CfgrlError(f"init state {init_state_id} is out of range; the builtin suite has 0..{NUM_INIT_STATES - 1}")

    def reset(self, task_id: int, init_state_id: int, seed: int) -> Observation:
        self.check_episode(task_id, init_state_id)
        balls, colours, start = initial_layout(init_state_id)
        episode_rng = np.random.default_rng([_LAYOUT_SALT, task_id, init_state_id, seed])
        self._noise_rng, self._expert_rng = episode_rng.spawn(2)
        self._expert_draw = float(self._expert_rng.random())  # decides whether a noisy expert errs
        self._fumble_draw = float(self._expert_rng.random())  # decides whether it fumbles, and where
        start = start + self._noise_rng.uniform(-START_JITTER, START_JITTER, size=2)
        self._sim = SimState(
            pos=start, vel=np.zeros(2), grip=0.0, balls=balls, colours=colours, target=task_id, held=-1, hold_steps=0, steps=0
        )
        self._fumbled = False
        self._prompt = self._tasks[task_id].prompt
        return self._observation(render=True)

    def init_config(self, task_id: int, init_state_id: int) -> list[float]:
        return []  # the id alone fixes the scene (``initial_layout``)

    def step(self, action: np.ndarray, render: bool) -> StepResult:
        if self._sim is None:
            raise RuntimeError("step() before reset()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"expected an action of shape ({ACTION_DIM},), got {action.shape}")
        disturbance = self._noise_rng.normal(0.0, VELOCITY_NOISE, size=2)
        self._sim = advance(self._sim, action, disturbance)
        success = is_success(self._sim)
        return StepResult(obs=self._observation(render), reward=1.0 if success else 0.0, success=success)

    def scripted_chunk(self, noise: float, horizon: int = 50) -> np.ndarray:
        """The scripted expert's next action chunk (horizon, ACTION_DIM) from the privileged state."""
        from cfgrl.envs.scripted import expert_chunk, fumble_distance

        if self._sim is None:
            raise RuntimeError("scripted_chunk() before reset()")
        if self._sim.grip >= CLOSED:
            self._fumbled = True  # the gripper has closed once: a planned fumble has happened
        fumble_at = None if self._fumbled else fumble_distance(noise, self._fumble_draw)
        return expert_chunk(self._sim, noise, self._expert_draw, self._expert_rng, horizon, fumble_at)

    def close(self) -> None:
        self._sim = None

    def _state_vector(self) -> np.ndarray:
        """8-d laid out like LIBERO's (position 3, orientation 3, gripper 2): the effector's x, y and
        height (always 0 on this flat table), its orientation (it never turns: 0, 0, 0), the gripper's
        closure and a touch sensor (something, not saying what, is held).

        Deliberately no clock, velocity or gripper rate: behaviour cloning latches onto such features
        (measured with an elapsed-time feature: the cloned policy closed the gripper at steps 19-28
        wherever it was; velocity and gripper rate let it copy its previous action instead of looking
        for the named ball). LIBERO's state has none of them either.
        """
        sim = self._sim
        holding = 1.0 if sim.held >= 0 else 0.0
        return np.array([sim.pos[0], sim.pos[1], 0.0, 0.0, 0.0, 0.0, sim.grip, holding], dtype=np.float32)

    def _observation(self, render: bool) -> Observation:
        images = None
        if render:
            images = {"agentview": self._renderer.agentview(self._sim), "wrist": self._renderer.wrist(self._sim)}
        return Observation(images=images, state=self._state_vector(), prompt=self._prompt)

