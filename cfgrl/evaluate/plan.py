"""Which episodes an evaluation runs: the paired design shared by every guidance weight.

An evaluation is a list of *slots* (split, suite, task, init state, repeat, seed) fixed before any w
is looked at; every w — and the baseline checkpoint — runs exactly the test slots. So a difference
between two weights is never a difference between init states or episode seeds (common random
numbers), and the paired interval in ``stats`` applies.

The guidance weight is *chosen* on validation slots and *reported* on test slots, never chosen on
the episodes it is reported on. Validation slots come from ``evaluate.validation_init_states``
(disjoint from the training and test init states); LIBERO's protocol tests on its 50 fixed init
states per task and validates on layouts drawn from the benchmark's placement regions (init states
from 50 up, ``cfgrl.envs.libero_layouts``). Only the policy's arms run validation slots (the baseline runs at one given w), and
only when there is a choice to make (two or more w).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from cfgrl.config import Config, EnvConfig
from cfgrl.envs.base import TaskInfo
from cfgrl.envs.libero_layouts import FIXED_INIT_STATES, VALIDATION_INIT_STATES
from cfgrl.errors import CfgrlError
from cfgrl.rollout.seeds import episode_seed
from cfgrl.rollout.specs import shard_groups

POLICY, BASELINE = "policy", "baseline"
TEST, VALIDATION = "test", "validation"
# A base checkpoint never saw an optimality label: its unconditional path. A trained one (the previous
# round's policy) runs at the w its evaluation chose on validation instead (`--baseline-cfg-scale`).
BASELINE_CFG_SCALE = 0.0


@dataclass(frozen=True)
class Slot:
    """One (task, init state, repeat) of one suite and split, with the episode seed every w shares."""

    split: str  # TEST | VALIDATION
    suite: str
    task_id: int
    prompt: str
    init_state_id: int
    repeat: int
    seed: int

    @property
    def pair_key(self) -> tuple[str, str, int, int, int]:
        return (self.split, self.suite, self.task_id, self.init_state_id, self.repeat)


@dataclass(frozen=True)
class EvalEpisode:
    """A slot rolled out by one policy (``role``) at one guidance weight."""

    role: str  # POLICY | BASELINE
    cfg_scale: float
    slot: Slot

    def record_fields(self) -> dict[str, Any]:
        return {"role": self.role, "cfg_scale": self.cfg_scale, **asdict(self.slot)}


def check_protocol(cfg: Config) -> None:
    """``libero`` fixes the episode set; settings that would silently change it are errors."""
    ev, env = cfg.evaluate, cfg.env
    if ev.episodes_per_init < 1:
        raise CfgrlError(f"evaluate.episodes_per_init must be at least 1 (zero episodes to run), got {ev.episodes_per_init}")
    if ev.protocol == "libero":
        if env.tasks is not None or ev.init_states is not None or ev.episodes_per_init != 1:
            raise CfgrlError(
                "evaluate.protocol=libero runs every task with its 50 fixed init states once; leave env.tasks, "
                "evaluate.init_states null and evaluate.episodes_per_init 1, or use evaluate.protocol=custom"
            )
        # Training (env.init_states, what collect draws from) and validation are drawn layouts, never the test set.
        for key, chosen in (("env.init_states", env.init_states), ("evaluate.validation_init_states", ev.validation_init_states)):
            fixed = sorted(i for i in chosen or [] if i < FIXED_INIT_STATES)
            if fixed:
                raise CfgrlError(
                    f"evaluate.protocol=libero tests on the fixed init states 0..{FIXED_INIT_STATES - 1}, and {key} holds "
                    f"{len(fixed)} of them (first {fixed[0]}); give drawn layouts, ids from {FIXED_INIT_STATES} up, or use evaluate.protocol=custom"
                )
    if ev.validation_only and ev.protocol == "custom" and ev.validation_init_states is None:
        raise CfgrlError("evaluate.validation_only runs the validation episodes alone, and none are set: set "
                         "evaluate.validation_init_states (disjoint from the training and test init states)")
    if ev.validation_init_states is not None:
        validation = set(ev.validation_init_states)
        for key, other in (("evaluate.init_states", ev.init_states), ("env.init_states", env.init_states)):
            shared = sorted(validation & set(other or []))
            if shared:
                raise CfgrlError(
                    f"evaluate.validation_init_states shares {len(shared)} init states with {key} (first {shared[0]}); "
                    "w must be chosen on init states used neither for training nor for the reported test"
                )


def chooses_w(cfg: Config) -> bool:
    """Whether the sweep has a w to choose (two or more distinct weights)."""
    return len(_unique_floats(cfg.evaluate.cfg_scales)) > 1


def validates(cfg: Config) -> bool:
    """Whether the evaluation runs validation slots: a choice of w (two or more), or validation alone, and
    somewhere to run them."""
    wanted = chooses_w(cfg) or cfg.evaluate.validation_only
    return wanted and (cfg.evaluate.protocol == "libero" or cfg.evaluate.validation_init_states is not None)


def require_validation(cfg: Config, who: str) -> None:
    """``who`` picks a w from an evaluation: refuse a configuration that would pick it on test episodes."""
    if chooses_w(cfg) and not validates(cfg):
        raise CfgrlError(
            f"{who} chooses the guidance weight on validation init states, and none are set: set "
            "evaluate.validation_init_states (disjoint from env.init_states and evaluate.init_states), "
            "or use evaluate.protocol=libero"
        )


def slots_for_suite(env_cfg: EnvConfig, tasks: list[TaskInfo], cfg: Config) -> list[Slot]:
    """The test slots of one suite (none under ``evaluate.validation_only``), then its validation slots
    when the evaluation ``validates``."""
    test_inits = cfg.evaluate.init_states if cfg.evaluate.init_states is not None else env_cfg.init_states
    inits = cfg.evaluate.validation_init_states
    if cfg.evaluate.protocol == "libero":  # test: the fixed init states; validation: drawn layouts
        test_inits, inits = None, inits if inits is not None else VALIDATION_INIT_STATES
    slots = [] if cfg.evaluate.validation_only else _split_slots(TEST, test_inits, env_cfg, tasks, cfg)
    if validates(cfg):
        slots += _split_slots(VALIDATION, inits, env_cfg, tasks, cfg)
    return slots


def _split_slots(split: str, chosen_inits: list[int] | None, env_cfg: EnvConfig, tasks: list[TaskInfo], cfg: Config) -> list[Slot]:
    """Chosen tasks x chosen init states x ``episodes_per_init`` repeats.

    Test init states: ``evaluate.init_states`` (e.g. held out from collection), else
    ``env.init_states``, else every init state of the task."""
    by_id = {t.task_id: t for t in tasks}
    chosen = list(by_id) if env_cfg.tasks is None else list(env_cfg.tasks)
    for task_id in chosen:
        if task_id not in by_id:
            valid = ", ".join(f"{t.task_id} ({t.prompt})" for t in tasks)
            raise CfgrlError(f"task {task_id} is not in suite '{env_cfg.suite}'; valid tasks: {valid}")
    slots = []
    for task_id in _unique(chosen):
        task = by_id[task_id]
        inits = range(task.num_init_states) if chosen_inits is None else chosen_inits
        for init in _unique(inits):
            if not 0 <= init < task.init_state_limit:
                drawn = f" and drawn layouts {task.num_init_states}..{task.init_state_limit - 1}" if task.drawn_init_states else ""
                raise CfgrlError(
                    f"init state {init} is out of range for task {task_id} of suite '{env_cfg.suite}' "
                    f"(it has 0..{task.num_init_states - 1}{drawn})"
                )
            for repeat in range(cfg.evaluate.episodes_per_init):
                # Independent of w (the pairing across weights); the split is the seed's stream.
                seed = episode_seed(split, cfg.evaluate.seed, task_id, init, repeat)
                slots.append(Slot(split, env_cfg.suite, task_id, task.prompt, init, repeat, seed))
    if not slots:
        raise CfgrlError(f"suite '{env_cfg.suite}': the chosen tasks and {split} init states give zero episodes; choose at least one of each")
    return slots


def _unique(items: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(i) for i in items))


def plan_episodes(slots: list[Slot], cfg_scales: list[float], baseline_cfg_scale: float | None) -> list[EvalEpisode]:
    """Every w runs every slot; the baseline checkpoint (None: no baseline) runs the test slots once
    at its own w (nothing is chosen for it)."""
    episodes = [EvalEpisode(POLICY, float(w), slot) for w in _unique_floats(cfg_scales) for slot in slots]
    if baseline_cfg_scale is not None:
        episodes += [EvalEpisode(BASELINE, float(baseline_cfg_scale), slot) for slot in slots if slot.split == TEST]
    return episodes


def _unique_floats(values: Iterable[float]) -> list[float]:
    return list(dict.fromkeys(float(v) for v in values))


def episode_key(episode: EvalEpisode, checkpoint: str, settings: str) -> str:
    """The episode log's key: everything that decides an outcome (see ``ledger``)."""
    s = episode.slot
    return f"{checkpoint}|{settings}|{episode.role}|w={episode.cfg_scale:g}|{s.suite}|t{s.task_id}|i{s.init_state_id}|r{s.repeat}|s{s.seed}"


def shard_slots(slots: list[Slot], shard: int, num_shards: int) -> list[Slot]:
    """One shard's slots: whole slots, round-robin over the plan's order (collect's shard convention), so
    every w of a slot and the baseline's episode of it run in one shard and stay paired there."""
    return [slots[i] for i in shard_groups(len(slots), shard, num_shards)]


@dataclass(frozen=True)
class Plan:
    """An evaluation's episodes and what keys them: what every shard of one evaluation must share."""

    protocol: str
    slots: list[Slot]
    cfg_scales: list[float]  # the policy's weights, each once, in order
    baseline_cfg_scale: float | None  # None: no baseline checkpoint
    checkpoints: dict[str, str]  # role -> content fingerprint
    settings: str  # settings_digest

    def episodes(self, shard: int = 0, num_shards: int = 1) -> list[EvalEpisode]:
        """The planned episodes of one shard (all of them by default), in plan order."""
        everything = plan_episodes(self.slots, self.cfg_scales, self.baseline_cfg_scale)
        mine = set(shard_slots(self.slots, shard, num_shards))
        return [ep for ep in everything if ep.slot in mine]

    def arms(self) -> list[tuple[str, float]]:
        return list(dict.fromkeys((ep.role, ep.cfg_scale) for ep in self.episodes()))

    def key(self, episode: EvalEpisode) -> str:
        return episode_key(episode, self.checkpoints[episode.role], self.settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        return cls(d["protocol"], [Slot(**s) for s in d["slots"]], [float(w) for w in d["cfg_scales"]],
                   d["baseline_cfg_scale"], dict(d["checkpoints"]), d["settings"])

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def make_plan(cfg: Config, slots: list[Slot], baseline_cfg_scale: float | None, checkpoints: dict[str, str]) -> Plan:
    return Plan(cfg.evaluate.protocol, slots, _unique_floats(cfg.evaluate.cfg_scales), baseline_cfg_scale, checkpoints, settings_digest(cfg))


def outcome_settings(cfg: Config) -> dict[str, Any]:
    """What, besides the checkpoint and the slot, changes an episode's outcome. A setting added later
    enters only when not at its default, so the logs written before it keep their keys (resume)."""
    relevant: dict[str, Any] = {
        "env": {"name": cfg.env.name, "image_size": cfg.env.image_size, "max_steps": cfg.env.max_steps},
        "inference": {"num_steps": cfg.inference.num_steps, "replan_steps": cfg.inference.replan_steps},
    }
    import torch

    from cfgrl.policy.policy import dtype_named

    dtype = dtype_named(cfg.policy.dtype, "policy.dtype", auto=True)
    if dtype != torch.float32:
        relevant["dtype"] = str(dtype)
    if cfg.env.mesh_grid_mm:
        relevant["mesh_grid_mm"] = cfg.env.mesh_grid_mm
    if cfg.env.benchmark_seed:
        relevant["env"]["benchmark_seed"] = cfg.env.benchmark_seed
    if cfg.env.cameras is not None:
        relevant["env"]["cameras"] = list(cfg.env.cameras)
    if cfg.policy.camera_map is not None:
        relevant["policy"] = {"camera_map": list(cfg.policy.camera_map)}
    return relevant


def settings_digest(cfg: Config) -> str:
    """The resume key's digest of ``outcome_settings``."""
    return hashlib.sha256(json.dumps(outcome_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]


def differing_settings(a: Config, b: Config) -> list[str]:
    """The outcome-changing settings on which two evaluations differ, as "key (A, B)"."""
    flat_a, flat_b = _flat(outcome_settings(a)), _flat(outcome_settings(b))
    return [f"{key} ({flat_a.get(key, 'default')}, {flat_b.get(key, 'default')})"
            for key in sorted(flat_a.keys() | flat_b.keys()) if flat_a.get(key) != flat_b.get(key)]


# The two top-level keys of ``outcome_settings`` (kept where the first logs put them) by their config names.
_CONFIG_NAMES = {"dtype": "policy.dtype", "mesh_grid_mm": "env.mesh_grid_mm"}


def _flat(tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[_CONFIG_NAMES[key]] = value
    return out
