"""The environment side of the rollout engine: one process, a few environments, one episode at a time in each.

Workers are started with the ``spawn`` method (fork and OpenGL contexts do not mix) and never import
torch: the policy lives in the main process, which sends each worker the ``replan_steps`` actions to
execute and gets back the next query observation. The worker records the episode itself, so only
small messages cross the pipe until the episode is finished.

Messages (main -> worker), ``env`` naming one of the worker's environments: ``("reset", env, spec,
video)``, ``("act", env, actions)``, ``("scripted", env, spec, video, noise, replan_steps)``,
``("close",)``. Replies, one per message and in order: ``("obs", Observation)``,
``("done", FinishedEpisode)``, ``("error", message, is_bad_input)``.
"""

from __future__ import annotations

import signal
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from cfgrl.config import EnvConfig
from cfgrl.envs import Env, Observation, make_env
from cfgrl.errors import CfgrlError


@dataclass
class FinishedEpisode:
    """What a worker hands back when an episode ends (the engine adds the metadata)."""

    state: np.ndarray  # (T, STATE_DIM) observed before each step's action
    action: np.ndarray  # (T, ACTION_DIM) executed (clipped to [-1, 1], as the env applies it)
    reward: np.ndarray  # (T,)
    done: np.ndarray  # (T,) True on the success step
    is_wait: np.ndarray  # (T,)
    frames: dict[str, np.ndarray]  # camera -> (F, H, W, 3) uint8 at the query steps
    frame_step: np.ndarray  # (F,) step index of each frame
    success: bool
    prompt: str
    num_wait_steps: int
    renderer: str
    init_config: list[float]  # what the init state id stands for, where the id alone does not fix it (``Env.init_config``)
    video: np.ndarray | None = None  # (T + 1, H, W * cameras, 3) every step, when asked


@dataclass
class EpisodeRecorder:
    """Plays one episode on ``env`` and keeps everything the store needs."""

    env: Env
    max_steps: int
    video: bool
    policy_steps: int = 0
    success: bool = False
    prompt: str = ""
    init_config: list[float] = field(default_factory=list)
    _steps: list[tuple[np.ndarray, np.ndarray, float, bool, bool]] = field(default_factory=list)
    _frames: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    _video: list[np.ndarray] = field(default_factory=list)

    def start(self, task_id: int, init_state_id: int, seed: int) -> Observation:
        """Reset, play the settle steps, return the first query observation."""
        obs = self.env.reset(task_id, init_state_id, seed)
        self.prompt = obs.prompt
        self.init_config = self.env.init_config(task_id, init_state_id)
        self._film(obs)
        for i in range(self.env.num_wait_steps):
            obs = self._step(obs, self.env.wait_action, render=self.video or i == self.env.num_wait_steps - 1, wait=True)
        self._query(obs)
        return obs

    @property
    def finished(self) -> bool:
        return self.success or self.policy_steps >= self.max_steps

    def play(self, actions: np.ndarray, obs: Observation) -> Observation | None:
        """Execute ``actions`` from ``obs``; the next query observation, or None once the episode ended."""
        for i, action in enumerate(actions):
            last = i == len(actions) - 1
            obs = self._step(obs, action, render=self.video or last, wait=False)
            self.policy_steps += 1
            if self.finished:
                return None
        self._query(obs)
        return obs

    def _step(self, obs: Observation, action: np.ndarray, render: bool, wait: bool) -> Observation:
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        result = self.env.step(action, render=render)
        self._steps.append((obs.state, action, result.reward, result.success, wait))
        self.success = self.success or (result.success and not wait)
        self._film(result.obs)
        return result.obs

    def _query(self, obs: Observation) -> None:
        self._frames.append((len(self._steps), obs.images))

    def _film(self, obs: Observation) -> None:
        if self.video and obs.images is not None:
            self._video.append(np.concatenate([obs.images[c] for c in self.env.camera_names], axis=1))

    def finish(self) -> FinishedEpisode:
        states, actions, rewards, dones, waits = zip(*self._steps)
        return FinishedEpisode(
            state=np.stack(states).astype(np.float32),
            action=np.stack(actions).astype(np.float32),
            reward=np.asarray(rewards, np.float32),
            done=np.asarray(dones, bool),
            is_wait=np.asarray(waits, bool),
            frames={c: np.stack([images[c] for _, images in self._frames]) for c in self.env.camera_names},
            frame_step=np.asarray([step for step, _ in self._frames], np.int64),
            success=self.success,
            prompt=self.prompt,
            num_wait_steps=self.env.num_wait_steps,
            renderer=self.env.renderer,
            init_config=self.init_config,
            video=np.stack(self._video) if self.video else None,
        )


def _max_steps(env: Env, task_id: int) -> int:
    return next(t.max_steps for t in env.tasks() if t.task_id == task_id)


class _Episodes:
    """One of the worker's environments between messages: the env and the episode it is playing."""

    def __init__(self, env_cfg: EnvConfig, prepared: Any):
        self.env = make_env(env_cfg, prepared)
        self.recorder: EpisodeRecorder | None = None
        self.obs: Observation | None = None

    def _start(self, spec, video: bool) -> None:
        self.recorder = EpisodeRecorder(self.env, _max_steps(self.env, spec.task_id), video)
        self.obs = self.recorder.start(spec.task_id, spec.init_state_id, spec.seed)

    def handle(self, message: tuple) -> tuple:
        kind = message[0]
        try:
            if kind == "reset":
                _, spec, video = message
                self._start(spec, video)
                return ("obs", self.obs)
            if kind == "act":
                self.obs = self.recorder.play(message[1], self.obs)
                return ("obs", self.obs) if self.obs is not None else ("done", self.recorder.finish())
            if kind == "scripted":
                _, spec, video, noise, replan_steps = message
                self._start(spec, video)
                while self.obs is not None:
                    # Only the builtin, LIBERO and Meta-World envs have scripted experts; only the executed part of a chunk is planned.
                    self.obs = self.recorder.play(self.env.scripted_chunk(noise, horizon=replan_steps), self.obs)
                return ("done", self.recorder.finish())
            raise ValueError(f"unknown worker message {kind!r}")
        except CfgrlError as exc:  # bad input: the main process shows the one line
            return ("error", str(exc), True)
        except Exception as exc:  # noqa: BLE001 - a bug: the main process raises it with the trace
            return ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", False)


def serve(conn: Connection, env_cfg: EnvConfig, prepared: Any, envs: int) -> None:
    """Worker process entry point: answer messages until ``close`` or until the main process is gone.

    ``prepared``: what the main process built once for every worker (``cfgrl.envs.prepare_env``);
    ``envs``: how many environments this worker holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it closes us
    slots = [_Episodes(env_cfg, prepared) for _ in range(envs)]
    try:
        while True:
            message = conn.recv()
            if message[0] == "close":
                return
            kind, env, *rest = message
            conn.send(slots[env].handle((kind, *rest)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process died (e.g. SIGKILL): nothing to hand back
    finally:
        for slot in slots:
            slot.env.close()
