"""The rollout engine: worker processes hold the environments, the main process holds the policy.

Each worker process holds ``envs_per_worker`` environments. Each round, every running episode
contributes its query observation to ONE batched policy call; each worker then executes the first
``replan_steps`` actions of each of its episodes' chunks and returns the next query observations.
The flow noise of every query comes from the episode's own generator (seeded by the episode seed),
so an episode's actions do not depend on which other episodes shared its batch.
Finished episodes are written (and forgotten) at once, so memory does not grow with the run.

Workers are spawned, so a script that calls ``run_episodes`` needs the usual
``if __name__ == "__main__":`` guard (the ``cfgrl`` command has it).

Termination: every round advances every running episode by at least one policy step, every
episode ends by its ``max_steps``, and a worker that stops answering raises after a timeout.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from cfgrl.config import EnvConfig
from cfgrl.envs import prepare_env
from cfgrl.errors import CfgrlError
from cfgrl.rollout.sources import ChunkPolicy, ScriptedExpert, flow_noise_generator, query_chunks
from cfgrl.rollout.specs import EpisodeSpec
from cfgrl.rollout.videos import write_video
from cfgrl.rollout.worker import FinishedEpisode, serve
from cfgrl.store import EpisodeData

WORKER_TIMEOUT_S = 900.0  # far above a LIBERO reset plus a chunk; a silent worker is a hung worker
LIBERO_ENV_GB = 2.4  # measured 2.2-2.4 GB per LIBERO env
BUILTIN_WORKERS = 8  # builtin workers are cheap; more of them make bigger policy batches


@dataclass
class EngineTime:
    """Where the main process spent its wall time: the collector's own overhead is ``store_s + pipe_s``
    (writing finished episodes, moving messages through the pipes); the rest is the policy and waiting
    for the environment workers."""

    policy_s: float = 0.0
    store_s: float = 0.0
    pipe_s: float = 0.0  # pickling and sending, and unpickling replies that have arrived
    wall_s: float = 0.0

    def line(self) -> str:
        wall = max(self.wall_s, 1e-9)
        waiting = max(0.0, self.wall_s - self.policy_s - self.store_s - self.pipe_s)
        parts = [("policy", self.policy_s), ("storing episodes", self.store_s), ("pipes", self.pipe_s),
                 ("waiting for environments", waiting)]
        return "collector time: " + ", ".join(f"{name} {sec:.1f} s ({sec / wall:.0%})" for name, sec in parts)


@dataclass(frozen=True)
class EpisodeResult:
    spec: EpisodeSpec
    success: bool
    length: int  # policy steps (settle steps excluded)
    prompt: str


def episode_data(env_cfg: EnvConfig, spec: EpisodeSpec, ep: FinishedEpisode, policy_id: str, cfg_scale: float,
                 run_id: str) -> EpisodeData:
    """A finished episode with every metadata column of the store's episode table."""
    meta = dict(
        num_wait_steps=ep.num_wait_steps, task_id=spec.task_id, init_state_id=spec.init_state_id,
        group_id=spec.group_id, rollout_index=spec.rollout_index, seed=spec.seed, success=ep.success,
        cfg_scale=cfg_scale, env=env_cfg.name, suite=env_cfg.suite, prompt=ep.prompt, policy_id=policy_id,
        run_id=run_id, renderer=ep.renderer, init_config=json.dumps(ep.init_config),
    )
    return EpisodeData(state=ep.state, action=ep.action, reward=ep.reward, done=ep.done, is_wait=ep.is_wait,
                       frames=ep.frames, frame_step=ep.frame_step, meta=meta)


def default_workers(env_cfg: EnvConfig, num_episodes: int, envs_per_worker: int = 1) -> int:
    """As many workers as fit: LIBERO by memory (~2.4 GB per env) and cores, the others a fixed few;
    never more than the episodes fill."""
    if env_cfg.name == "libero":
        fits = int(_available_memory_gb() // (LIBERO_ENV_GB * envs_per_worker))
        wanted = min(os.cpu_count() or 1, fits)
    else:
        wanted = BUILTIN_WORKERS
    return max(1, min(wanted, math.ceil(num_episodes / envs_per_worker)))


def pool_shape(env_cfg: EnvConfig, policy: Any, num_episodes: int, workers: int | None, envs_per_worker: int) -> tuple[int, int]:
    """(worker processes, envs in each): no more of either than the episodes fill. A scripted expert
    plays whole episodes inside its worker, one at a time, so it gets one env per worker."""
    envs = 1 if isinstance(policy, ScriptedExpert) else envs_per_worker
    num_workers = min(workers or default_workers(env_cfg, num_episodes, envs), num_episodes)
    return num_workers, min(envs, math.ceil(num_episodes / num_workers))


def _available_memory_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return LIBERO_ENV_GB * 2


class WorkerPool:
    """``n`` spawned processes, each serving ``envs`` environments over one pipe. An environment is
    addressed by its slot, ``worker * envs + i``. A worker answers in the order it was sent to, so
    the replies of one worker's slots must be received in the order their messages were sent. What
    every env instance shares (Meta-World's benchmark) is built once, here, and handed to each worker."""

    def __init__(self, env_cfg: EnvConfig, n: int, envs: int, clock: EngineTime):
        ctx = mp.get_context("spawn")
        self.clock, self.envs = clock, envs
        self.conns, self.procs = [], []
        prepared = prepare_env(env_cfg)
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(child, env_cfg, prepared, envs), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def slots(self) -> list[int]:
        return list(range(len(self.conns) * self.envs))

    def send(self, slot: int, message: tuple) -> None:
        started = time.perf_counter()
        worker, env = divmod(slot, self.envs)
        self.conns[worker].send((message[0], env, *message[1:]))
        self.clock.pipe_s += time.perf_counter() - started

    def recv(self, slot: int) -> tuple[str, Any]:
        worker = slot // self.envs
        conn = self.conns[worker]
        if not conn.poll(WORKER_TIMEOUT_S):
            raise RuntimeError(f"environment worker {worker} did not answer within {WORKER_TIMEOUT_S:.0f} s")
        started = time.perf_counter()
        try:
            reply = conn.recv()
        except EOFError:
            raise RuntimeError(
                f"environment worker {worker} died (exit code {self.procs[worker].exitcode}); see its output above"
            ) from None
        if reply[0] == "error":
            _, message, bad_input = reply
            raise CfgrlError(message) if bad_input else RuntimeError(f"environment worker {worker} failed: {message}")
        self.clock.pipe_s += time.perf_counter() - started
        return reply

    def wait_any(self, slots: list[int]) -> list[int]:
        """Those of ``slots`` (at most one per worker) whose worker has answered."""
        ready = wait([self.conns[s // self.envs] for s in slots], timeout=WORKER_TIMEOUT_S)
        if not ready:
            raise RuntimeError(f"no environment worker answered within {WORKER_TIMEOUT_S:.0f} s")
        return [s for s in slots if self.conns[s // self.envs] in ready]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()


@dataclass
class _Running:
    index: int  # position in the spec list (decides whether it is filmed)
    spec: EpisodeSpec
    obs: Any
    generator: Any


class _Queue:
    """The episodes still to start, by task. A free env takes the next episode of the task it played
    last (that task's simulator is open in it), else one of the task the fewest envs are playing, so
    each env opens few tasks (a Meta-World or LIBERO task costs about a second to open). An episode's
    result depends on its spec alone, never on when or where it runs."""

    def __init__(self, pending: list[tuple[int, EpisodeSpec]]):
        self.by_task: dict[int, deque] = {}
        for index, spec in pending:
            self.by_task.setdefault(spec.task_id, deque()).append((index, spec))
        self.playing: Counter = Counter()
        self.last_task: dict[int, int] = {}  # slot -> the task it played last

    def __bool__(self) -> bool:
        return any(self.by_task.values())

    def take(self, slot: int) -> tuple[int, EpisodeSpec]:
        task = self.last_task.get(slot)
        if not self.by_task.get(task):
            # ties go to the task queued first, so episodes start roughly in spec order (the filmed ones early)
            task = min((t for t, q in self.by_task.items() if q), key=lambda t: (self.playing[t], self.by_task[t][0][0]))
        self.playing[task] += 1
        self.last_task[slot] = task
        return self.by_task[task].popleft()

    def ended(self, spec: EpisodeSpec) -> None:
        self.playing[spec.task_id] -= 1


def run_episodes(
    env_cfg: EnvConfig,
    policy: ChunkPolicy | ScriptedExpert,
    specs: list[EpisodeSpec],
    cfg_scale: float,
    workers: int | None = None,
    envs_per_worker: int = 1,
    progress: bool = True,
    replan_steps: int = 5,
    num_steps: int | None = None,
    on_episode: Callable[[EpisodeSpec, FinishedEpisode], None] | None = None,
    on_end: Callable[[], None] | None = None,
    videos: int = 0,
    video_dir: Path | None = None,
) -> list[EpisodeResult]:
    """Roll out every spec; hand each finished episode to ``on_episode`` as soon as it ends (e.g. to
    append it to a store, see ``episode_data``), call ``on_end`` after the last one (e.g. the store's
    final commit; timed as storing, like ``on_episode``) and film the first ``videos`` specs into
    ``video_dir``. ``num_steps``: flow-sampler steps (None = the policy's own). ``envs_per_worker``:
    environments each worker process steps in turn (the policy's batch is workers x envs_per_worker).
    Returns one small summary per episode, in the order they finished."""
    if not specs:
        return []
    num_workers, envs = pool_shape(env_cfg, policy, len(specs), workers, envs_per_worker)
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(specs), unit="ep", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    clock = EngineTime()
    env_steps = wins = 0

    def finish(index: int, spec: EpisodeSpec, episode: FinishedEpisode) -> None:
        nonlocal env_steps, wins
        if on_episode is not None:
            started_store = time.perf_counter()
            on_episode(spec, episode)
            clock.store_s += time.perf_counter() - started_store
        if episode.video is not None and video_dir is not None:
            write_video(video_dir / f"episode{index:05d}_group{spec.group_id}_rollout{spec.rollout_index}.mp4", episode.video)
        env_steps += len(episode.action)
        length = len(episode.action) - episode.num_wait_steps
        results.append(EpisodeResult(spec, episode.success, length, episode.prompt))
        wins += episode.success
        rate = env_steps / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"success {wins}/{len(results)}, {rate:.0f} env-steps/s", refresh=False)
        bar.update(1)

    pool = WorkerPool(env_cfg, num_workers, envs, clock)
    try:
        queue = _Queue(list(enumerate(specs)))
        if isinstance(policy, ScriptedExpert):
            _run_scripted(pool, policy, queue, replan_steps, videos, finish)
        else:
            sample = _timed(partial(query_chunks, policy, cfg_scale=cfg_scale, num_steps=num_steps), clock)
            _run_batched(pool, sample, queue, replan_steps, videos, finish)
        if on_end is not None:
            started_store = time.perf_counter()
            on_end()
            clock.store_s += time.perf_counter() - started_store
    finally:
        pool.close()
        bar.close()
    clock.wall_s = time.perf_counter() - started
    if progress:
        print(clock.line())
    return results


def _timed(sample: Callable, clock: EngineTime) -> Callable:
    def timed_sample(*args):
        started = time.perf_counter()
        try:
            return sample(*args)
        finally:
            clock.policy_s += time.perf_counter() - started

    return timed_sample


def _run_batched(pool: WorkerPool, sample: Callable, queue: _Queue, replan_steps: int, videos: int,
                 finish: Callable) -> None:
    running: dict[int, _Running] = {}
    idle = pool.slots()
    while queue or running:
        starting = []
        while idle and queue:
            slot = idle.pop()
            index, spec = queue.take(slot)
            pool.send(slot, ("reset", spec, index < videos))
            starting.append((slot, index, spec))
        for slot, index, spec in starting:
            _, obs = pool.recv(slot)
            running[slot] = _Running(index, spec, obs, flow_noise_generator(spec.seed))
        order = sorted(running)
        chunks = sample([running[s].obs for s in order], [running[s].generator for s in order])
        for slot, chunk in zip(order, chunks):
            pool.send(slot, ("act", chunk[:replan_steps]))
        for slot in order:
            kind, payload = pool.recv(slot)
            if kind == "obs":
                running[slot].obs = payload
            else:
                done = running.pop(slot)
                queue.ended(done.spec)
                finish(done.index, done.spec, payload)
                idle.append(slot)


def _run_scripted(pool: WorkerPool, expert: ScriptedExpert, queue: _Queue, replan_steps: int, videos: int,
                  finish: Callable) -> None:
    """The scripted expert plans inside the workers: each worker plays whole episodes, one at a time."""
    busy: dict[int, tuple[int, EpisodeSpec]] = {}
    idle = pool.slots()
    while queue or busy:
        while idle and queue:
            slot = idle.pop()
            index, spec = queue.take(slot)
            pool.send(slot, ("scripted", spec, index < videos, expert.noise, replan_steps))
            busy[slot] = (index, spec)
        for slot in pool.wait_any(sorted(busy)):
            _, episode = pool.recv(slot)
            index, spec = busy.pop(slot)
            queue.ended(spec)
            finish(index, spec, episode)
            idle.append(slot)
