"""Which episodes an evaluation runs: the paired design shared by every guidance weight.

An evaluation is a list of *slots* (suite, task, init state, repeat, seed) fixed before any w is
looked at; every w — and the baseline checkpoint — runs exactly these slots. So a difference
between two weights is never a difference between init states or episode seeds (common random
numbers), and the paired interval in ``stats`` applies.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from cfgrl.config import Config, EnvConfig
from cfgrl.envs.base import TaskInfo
from cfgrl.errors import CfgrlError

POLICY, BASELINE = "policy", "baseline"
# A base checkpoint never saw an optimality label: its unconditional path. A trained one (the previous
# round's policy) runs at its own best w instead (`--baseline-cfg-scale`).
BASELINE_CFG_SCALE = 0.0


@dataclass(frozen=True)
class Slot:
    """One (task, init state, repeat) of one suite, with the episode seed every w shares."""

    suite: str
    task_id: int
    prompt: str
    init_state_id: int
    repeat: int
    seed: int

    @property
    def pair_key(self) -> tuple[str, int, int, int]:
        return (self.suite, self.task_id, self.init_state_id, self.repeat)


@dataclass(frozen=True)
class EvalEpisode:
    """A slot rolled out by one policy (``role``) at one guidance weight."""

    role: str  # POLICY | BASELINE
    cfg_scale: float
    slot: Slot

    def record_fields(self) -> dict[str, Any]:
        return {"role": self.role, "cfg_scale": self.cfg_scale, **asdict(self.slot)}


def episode_seed(base_seed: int, task_id: int, init_state_id: int, repeat: int) -> int:
    """A seed per (task, init state, repeat), independent of w: the pairing across weights."""
    state = np.random.SeedSequence([base_seed, task_id, init_state_id, repeat]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))  # < 2**63: fits the store's int64 seed column


def check_protocol(cfg: Config) -> None:
    """``libero`` fixes the episode set; settings that would silently change it are errors."""
    ev, env = cfg.evaluate, cfg.env
    if ev.episodes_per_init < 1:
        raise CfgrlError(f"evaluate.episodes_per_init must be at least 1 (zero episodes to run), got {ev.episodes_per_init}")
    if ev.protocol == "libero":
        if env.tasks is not None or env.init_states is not None or ev.init_states is not None or ev.episodes_per_init != 1:
            raise CfgrlError(
                "evaluate.protocol=libero runs every task with its 50 fixed init states once; leave env.tasks, "
                "env.init_states, evaluate.init_states null and evaluate.episodes_per_init 1, or use evaluate.protocol=custom"
            )


def slots_for_suite(env_cfg: EnvConfig, tasks: list[TaskInfo], cfg: Config) -> list[Slot]:
    """The slots of one suite: chosen tasks x chosen init states x ``episodes_per_init`` repeats.

    Init states: ``evaluate.init_states`` (e.g. held out from collection), else ``env.init_states``,
    else every init state of the task."""
    by_id = {t.task_id: t for t in tasks}
    chosen = list(by_id) if env_cfg.tasks is None else list(env_cfg.tasks)
    chosen_inits = cfg.evaluate.init_states if cfg.evaluate.init_states is not None else env_cfg.init_states
    for task_id in chosen:
        if task_id not in by_id:
            valid = ", ".join(f"{t.task_id} ({t.prompt})" for t in tasks)
            raise CfgrlError(f"task {task_id} is not in suite '{env_cfg.suite}'; valid tasks: {valid}")
    slots = []
    for task_id in _unique(chosen):
        task = by_id[task_id]
        inits = range(task.num_init_states) if chosen_inits is None else chosen_inits
        for init in _unique(inits):
            if not 0 <= init < task.num_init_states:
                raise CfgrlError(
                    f"init state {init} is out of range for task {task_id} of suite '{env_cfg.suite}' "
                    f"(it has 0..{task.num_init_states - 1})"
                )
            for repeat in range(cfg.evaluate.episodes_per_init):
                seed = episode_seed(cfg.evaluate.seed, task_id, init, repeat)
                slots.append(Slot(env_cfg.suite, task_id, task.prompt, init, repeat, seed))
    if not slots:
        raise CfgrlError(f"suite '{env_cfg.suite}': the chosen tasks and init states give zero episodes; choose at least one of each")
    return slots


def _unique(items: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in items))


def plan_episodes(slots: list[Slot], cfg_scales: list[float], baseline_cfg_scale: float | None) -> list[EvalEpisode]:
    """Every w runs every slot; the baseline checkpoint (None: no baseline) runs them once at its own w."""
    episodes = [EvalEpisode(POLICY, float(w), slot) for w in _unique_floats(cfg_scales) for slot in slots]
    if baseline_cfg_scale is not None:
        episodes += [EvalEpisode(BASELINE, float(baseline_cfg_scale), slot) for slot in slots]
    return episodes


def _unique_floats(values: Iterable[float]) -> list[float]:
    return list(dict.fromkeys(float(v) for v in values))


def settings_digest(cfg: Config) -> str:
    """What, besides the checkpoint and the slot, changes an episode's outcome (for resume keys)."""
    relevant = {
        "env": {"name": cfg.env.name, "image_size": cfg.env.image_size, "max_steps": cfg.env.max_steps},
        "inference": {"num_steps": cfg.inference.num_steps, "replan_steps": cfg.inference.replan_steps},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]
