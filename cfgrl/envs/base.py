"""The one environment interface every backend (``builtin``, ``libero``, ``metaworld``) implements.

An episode: ``reset`` (renders), then ``num_wait_steps`` steps of ``wait_action`` that the engine
records as wait steps, then policy steps until ``success`` or ``max_steps`` policy steps. ``step``
renders the cameras only when asked: the engine asks only at policy query steps, because rendering
is the dominant cost in LIBERO.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cfgrl.config import EnvConfig
from cfgrl.errors import CfgrlError

STATE_DIM = 8
ACTION_DIM = 7


@dataclass(frozen=True)
class TaskInfo:
    task_id: int
    prompt: str
    num_init_states: int  # the benchmark's fixed init states: ids 0..num_init_states - 1
    max_steps: int
    # Ids from num_init_states up to num_init_states + drawn_init_states - 1 name scenes drawn with a seed
    # from the benchmark's own placement regions (LIBERO's training and validation layouts); 0: none.
    drawn_init_states: int = 0

    @property
    def init_state_limit(self) -> int:
        """One past the largest init state id the task accepts."""
        return self.num_init_states + self.drawn_init_states


@dataclass
class Observation:
    images: dict[str, np.ndarray] | None  # camera -> uint8 (H, W, 3), as the policy receives them
    state: np.ndarray  # float32 (STATE_DIM,)
    prompt: str


@dataclass
class StepResult:
    obs: Observation  # images is None unless the step was asked to render
    reward: float
    success: bool  # the episode's `done`
    # True when this step hits max_steps without success. Set by the engine, which counts policy steps.


class Env(Protocol):
    name: str  # "builtin" | "libero" | "metaworld"
    suite: str
    camera_names: tuple[str, ...]
    image_size: int
    renderer: str  # e.g. "numpy", "egl", "osmesa": recorded in the store's metadata
    num_wait_steps: int
    wait_action: np.ndarray  # float32 (ACTION_DIM,)

    def tasks(self) -> list[TaskInfo]: ...

    def reset(self, task_id: int, init_state_id: int, seed: int) -> Observation: ...

    def step(self, action: np.ndarray, render: bool) -> StepResult: ...

    def init_config(self, task_id: int, init_state_id: int) -> list[float]:
        """What an init state id stands for, when the id alone does not fix it (Meta-World's
        configuration vector, which depends on the benchmark and its seed); [] otherwise."""
        ...

    def close(self) -> None: ...


MUJOCO_RENDERERS = ("egl", "osmesa")  # headless MuJoCo GL back-ends; egl with Mesa runs on llvmpipe without a GPU
DEFAULT_MUJOCO_RENDERER = "egl"  # measured here: works with Debian's Mesa EGL; libOSMesa is not installed by default


def select_mujoco_gl(backend: str) -> str:
    """Set ``MUJOCO_GL`` (default egl) and ``PYOPENGL_PLATFORM`` for headless rendering; returns it.

    Must run before ``mujoco`` is imported: MuJoCo picks its GL back-end once, at import.
    """
    renderer = os.environ.setdefault("MUJOCO_GL", DEFAULT_MUJOCO_RENDERER).strip().lower()
    if renderer not in MUJOCO_RENDERERS:
        raise CfgrlError(f"MUJOCO_GL='{renderer}' cannot render headless {backend}; use one of: {', '.join(MUJOCO_RENDERERS)}")
    os.environ.setdefault("PYOPENGL_PLATFORM", renderer)
    return renderer


def check_env_config(cfg: EnvConfig, suites: tuple[str, ...], backend: str, meshes: bool = False) -> None:
    """The checks a backend with fixed suites and fixed cameras makes on ``env.*`` before building anything;
    ``meshes``: it draws MuJoCo meshes, so ``env.mesh_grid_mm`` applies."""
    if cfg.suite not in suites:
        raise CfgrlError(f"env.suite '{cfg.suite}' is not a {backend} suite; choose one of: {', '.join(suites)}")
    if cfg.cameras is not None:
        raise CfgrlError(f"env.cameras is for Meta-World only; the {backend} env's cameras are fixed (set env.cameras: null)")
    if cfg.mesh_grid_mm and not meshes:
        raise CfgrlError(f"env.mesh_grid_mm is for Meta-World and LIBERO only; the {backend} env draws no meshes (set env.mesh_grid_mm: 0)")
    check_env_limits(cfg, backend)


def check_env_limits(cfg: EnvConfig, backend: str) -> None:
    """The image size and step limit checks every backend makes."""
    if cfg.image_size < 16:
        raise CfgrlError(f"env.image_size must be at least 16 for the {backend} env, got {cfg.image_size}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise CfgrlError(f"env.max_steps must be at least 1, got {cfg.max_steps}")


def smoke_report(env: Env, backend: str, suite: str) -> str:
    """Reset, render and step ``env`` once, then close it: the set-up scripts' one-line check."""
    try:
        obs = env.reset(0, 0, seed=0)
        env.step(env.wait_action, render=False)
        shapes = {name: img.shape for name, img in obs.images.items()}
        return f"{backend} ok: {suite} has {len(env.tasks())} tasks; renderer {env.renderer}; cameras {shapes}"
    finally:
        env.close()
