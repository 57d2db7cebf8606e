"""Typed configuration shared by every stage.

Precedence, highest first: command-line overrides (``-o section.key=value``) > environment
(``PI0_CFG_SCALE``) > a YAML file (``--config``) > the packaged defaults (``configs/default.yaml``,
which mirrors the dataclass defaults below). Unknown keys are errors; the keys of the retired
advantage-weighted objective get a message saying what replaces them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_type_hints

import yaml

from cfgrl import atomic
from cfgrl.errors import CfgrlError

DEFAULT_YAML = Path(__file__).parent / "configs" / "default.yaml"

CONDITION_MODES = ("token", "bias", "concat", "text")
LABEL_SOURCES = ("episode_rloo", "window_rloo", "window_return", "value", "none")
LABEL_SCHEMES = ("binary", "ternary")
ZERO_VARIANCE_POLICIES = ("unconditional", "drop", "keep")
ENV_NAMES = ("builtin", "libero", "metaworld")
OBJECTIVES = ("cfgrl", "filtered_bc", "weighted")
DEMONSTRATION_TREATMENTS = ("optimal", "unconditional")  # cfgrl.demonstrations.TREATMENTS
NORMALIZATIONS = ("mean_std", "quantile")  # cfgrl.policy.normalize.KINDS (config imports no policy code)


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a one-line help text (shown by ``cfgrl config``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class EnvConfig:
    name: str = _f("builtin", "environment backend: builtin | libero | metaworld")
    suite: str = _f("reach", "task suite: builtin 'reach'; LIBERO libero_spatial|libero_object|libero_goal|libero_10|libero_90; Meta-World MT10|MT50|one v3 task name (e.g. drawer-open-v3)")
    tasks: list[int] | None = _f(None, "task ids to use (null = every task of the suite)")
    init_states: list[int] | None = _f(None, "init-state ids to use, a list whose items may be ranges first-last (null = every init state of the suite)")
    max_steps: int | None = _f(None, "episode step limit (null = the suite's default)")
    image_size: int = _f(64, "rendered camera resolution (square); LIBERO uses 224")
    cameras: list[str] | None = _f(None, "Meta-World cameras the policy sees (null = corner, gripperPOV); builtin and LIBERO have fixed cameras")
    benchmark_seed: int = _f(0, "Meta-World benchmark seed: with the suite it fixes each task's 50 configurations; LIBERO: the seed of the layouts drawn for init states >= 50")
    mesh_grid_mm: float = _f(0.0, "draw for a CPU renderer: dense meshes with their vertices merged on a grid of this many mm (Meta-World: the arm's, 10: ~2x faster frames, ~1% of pixels change; LIBERO: the robot's and scanned objects', 5: with reflections and multisampling off, ~6x cheaper frames at 128 px, ~8% of pixels change, so only for policies trained with it); physics untouched; 0 = as shipped")


@dataclass
class PolicyConfig:
    path: str | None = _f(None, "policy checkpoint directory (ours, lerobot pi0 / pi05 or openpi); null = a fresh preset")
    preset: str = _f("tiny", "architecture preset for a fresh policy: tiny | small | mini | pi0 (PI0); pi05_tiny | pi05_small | pi05_mini | pi05 (π0.5)")
    condition_mode: str = _f("token", "how the optimality condition enters: token | bias | concat (the suffix) | text (the prompt: Advantage: positive/negative)")
    tokenizer: str | None = _f(None, "PaliGemma SentencePiece model path (pi0 and pi05 presets only)")
    discrete_state_input: bool | None = _f(None, "fresh π0.5 only: write the state into the prompt (false: the model never sees it; null = the preset's, true)")
    chunk_size: int | None = _f(None, "actions per chunk, and per label window (null = the checkpoint's, else the preset's)")
    normalization: str = _f("mean_std", "state/action stats a fresh policy, or a checkpoint without stats, computes: mean_std | quantile (q01 -> -1, q99 -> +1)")
    max_token_len: int | None = _f(None, "prompt tokens of a fresh policy or a checkpoint being fine-tuned (null = the checkpoint's, else the preset's); raise it to hold the text condition's advantage line")
    dtype: str = _f("auto", "weights' dtype when collect and evaluate run a checkpoint: auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16")
    camera_map: list[str] | None = _f(None, "a loaded checkpoint's cameras renamed to the env's, items CHECKPOINT=ENV, e.g. [base_0_rgb=agentview, left_wrist_0_rgb=wrist] for openpi's LIBERO checkpoints; a checkpoint camera the env lacks is masked (null = the names match)")


@dataclass
class CFGRLConfig:
    dropout_prob: float = _f(0.1, "probability that a conditioned label is replaced by the unconditional label")
    label_source: str = _f("episode_rloo", "window advantage estimate: episode_rloo | window_rloo | window_return | value (needs `cfgrl label --value DIR`) | none")
    label_scheme: str = _f("binary", "binary: o in {1, null}; ternary: o in {1, 0, null}")
    label_threshold: float | None = _f(None, "o=1 iff A_w >= threshold (null = the source's default); not with label_quantile")
    label_quantile: float | None = _f(None, "o=1 iff A_w >= this quantile of A_w over the windows of its task, in (0, 1): 0.7 = top 30% (null = 0.7 for value, else label_threshold)")
    value_horizon: int | None = _f(None, "value only: N of the N-step advantage, a multiple of replan_steps (null = the window length, 50)")
    use_prefix_dropout: bool = _f(False, "unconditional samples also drop the language tokens from the prefix")
    zero_variance_groups: str = _f("unconditional", "groups with one outcome: unconditional | drop | keep (not for value, which needs no group)")
    failed_episodes: str = _f("keep", "windows of failed episodes: keep (labelled like the others) | drop (left out after the advantages are computed: ∅ then learns from successes and demonstrations alone)")
    demonstrations: str = _f("optimal", "imported demonstrations (`cfgrl import`): optimal (a successful one's windows o = 1, as RECAP treats them; a failed one's as a failure) | unconditional (∅)")
    window_stride: int | None = _f(None, "steps between window starts, a multiple of replan_steps (null = every query step)")
    window_return_reduce: str = _f("sum", "window_return aggregates rewards inside the window by: sum | mean")
    seed: int = _f(0, "seed of the condition-dropout draw")


@dataclass
class ValueConfig:
    failure_penalty: float = _f(1.0, "reward at a failed episode's last step, in units of the task's maximum length L: -failure_penalty * L (1.0: a failure is worth -1, the lowest value)")
    image_size: int = _f(64, "images are resized to this square size for the value model (never enlarged)")
    steps: int = _f(2000, "optimiser steps per fold (two folds)")
    batch_size: int = _f(64, "frames per batch")
    lr: float = _f(1e-3, "learning rate (AdamW)")
    seed: int = _f(0, "seed of the fold split, the initialisation and the batches")


@dataclass
class InferenceConfig:
    cfg_scale: float = _f(1.0, "guidance weight w in v = v_null + w (v_1 - v_null); env PI0_CFG_SCALE overrides")
    num_steps: int = _f(10, "Euler steps of the flow sampler")
    replan_steps: int = _f(5, "actions executed from each predicted chunk before querying again")


@dataclass
class CollectConfig:
    groups: int = _f(4, "number of (task, init state) groups to collect (whole groups)")
    group_size: int = _f(8, "rollouts per group (K, for RLOO; at least 2)")
    workers: int | None = _f(None, "environment worker processes (null = fits the machine)")
    envs_per_worker: int = _f(1, "environments each worker process steps in turn: the policy's batch is workers x this, with fewer processes (each env opens its own task simulators)")
    seed: int = _f(0, "base seed; each episode's seed is derived from it")
    videos: int = _f(0, "write MP4 videos of the first N episodes")
    commit_seconds: float = _f(5.0, "commit finished episodes to the store at least this often (s); a crash loses at most the episodes since the last commit, which resume recollects (0 = after every episode; a commit costs ~60 ms)")
    adaptive: bool = _f(False, "plan groups in waves from the outcomes already in the store: unseen (task, init state) pairs first, then mixed ones; collect.groups is the run's total")
    adaptive_patience: int = _f(2, "adaptive: skip a (task, init state) pair once its last N groups all succeeded, or all failed")


@dataclass
class TrainConfig:
    objective: str = _f("cfgrl", "cfgrl (unweighted, conditioned per sample) | filtered_bc | weighted (the retired baseline)")
    steps: int = _f(2000, "optimiser steps")
    batch_size: int = _f(32, "global batch size")
    grad_accum: int = _f(1, "gradient accumulation micro-steps per optimiser step")
    lr: float = _f(2.5e-5, "peak learning rate (AdamW)")
    betas: list[float] = _f([0.9, 0.95], "AdamW betas")
    weight_decay: float = _f(1e-10, "AdamW weight decay")
    warmup_steps: int = _f(1000, "linear warm-up steps")
    decay_steps: int = _f(30000, "cosine decay steps")
    decay_lr: float = _f(2.5e-6, "learning rate at the end of the cosine decay")
    grad_clip: float = _f(1.0, "gradient-norm clip")
    ema_decay: float | None = _f(None, "keep EMA weights with this decay (null = off)")
    freeze_vision: bool = _f(False, "freeze the vision tower")
    train_expert_only: bool = _f(False, "train only the action expert and the projections")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass")
    strategy: str = _f("auto", "several processes (torchrun): ddp (each holds the whole model) | fsdp (FSDP2: weights, gradients and AdamW state sharded; needs torchrun, also with 1 process) | auto (fsdp above 1 B parameters with more than one process, else ddp)")
    param_dtype: str = _f("fp32", "weights' dtype: fp32 | bf16 (bf16 weights; the optimiser updates fp32 master copies of the trainable ones, on the weights' device)")
    lora_rank: int = _f(0, "LoRA adapter rank (peft) on the layers train.lora_targets names; only adapters and condition train (0 = off: every unfrozen weight trains)")
    lora_targets: list[str] = _f(["prefix_lm.*_proj", "expert.*_proj"], "LoRA: regular expressions searched in linear layers' names; the default, both Gemmas' attention and MLP, is openpi's LoRA recipe (q_proj alone hits vision, prefix LM and expert)")
    lora_alpha: float = _f(16.0, "LoRA: scale numerator; an adapter adds B A alpha/rank")
    lora_dropout: float = _f(0.0, "LoRA: dropout on the adapters' input")
    redraw_dropout: bool = _f(False, "redraw condition dropout each epoch from the raw labels")
    stats: str = _f("checkpoint", "normalisation stats: checkpoint (keep the policy's) | store (recompute)")
    num_workers: int = _f(0, "data-loader worker processes")
    cache_dir: str | None = _f(None, "where the decompressed memory-mapped window cache lives (null = RUN_DIR/cache)")
    wandb: bool = _f(False, "also log to Weights & Biases (needs wandb installed)")
    seed: int = _f(0, "training seed")
    save_every: int = _f(500, "checkpoint every N steps")
    keep_last: int = _f(2, "after each save, delete checkpoints older than the N newest (never last, policy, one with an eval/ folder or named in a round.json)")
    keep_every: int = _f(0, "also keep every checkpoint whose step is a multiple of N (0 = off)")
    log_every: int = _f(10, "log every N steps")
    weighted_alpha: float = _f(0.5, "objective=weighted only: weight of the unconditional loss term")
    optimal_repeat: int = _f(1, "objective=cfgrl only: each window whose raw label is o=1 enters every epoch N times, so o=1 gets a larger share of each batch (1 = as labelled)")


@dataclass
class EvaluateConfig:
    cfg_scales: list[float] = _f([0.0, 1.0, 1.5, 2.0, 3.0], "guidance weights to sweep")
    episodes_per_init: int = _f(1, "episodes per (task, init state) for each w")
    init_states: list[int] | None = _f(None, "test init-state ids, where every w is reported, e.g. held-out ones; items may be ranges first-last (null = env.init_states)")
    validation_init_states: list[int] | None = _f(None, "init-state ids on which w is chosen, disjoint from env.init_states and evaluate.init_states (null = no choice of w; protocol libero: its init states with other seeds)")
    protocol: str = _f("custom", "custom | libero (every task, its 50 init states, one episode each)")
    validation_only: bool = _f(False, "run the validation episodes alone, none on test (learning curves, choosing a recipe); needs evaluate.validation_init_states under protocol custom")
    seed: int = _f(1000, "base seed of the evaluation episodes (shared by every w)")
    videos: int = _f(0, "MP4s of the first N episodes per w")


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cfgrl: CFGRLConfig = field(default_factory=CFGRLConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        """Write the resolved configuration beside an artefact (whole, never half)."""
        atomic.write_text(path, self.to_json() + "\n")


LEGACY_KEYS = {
    "alpha_uncond": "CFGRL trains unweighted: every window gets one FM loss, conditioned on its label "
    "(o=1) or on nothing (null); tune cfgrl.dropout_prob and inference.cfg_scale instead",
    "use_binary_advantage": "CFGRL does not weight the loss by advantages; the advantage only sets the label "
    "(cfgrl.label_source, cfgrl.label_threshold, cfgrl.label_scheme)",
    "is_positive": "the condition is per sample and comes from the label index; at inference use "
    "inference.cfg_scale (1 = conditional only, 0 = unconditional only)",
}
LEGACY_ENV = {
    "PI0_IS_POSITIVE": "PI0_IS_POSITIVE is retired: guidance mixes both branches; set PI0_CFG_SCALE "
    "(1 = conditional only, 0 = unconditional only)",
}

SECTIONS = [f.name for f in dataclasses.fields(Config)]


def _section_class(name: str) -> type:
    return get_type_hints(Config)[name]


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown(key: str, known: list[str]) -> CfgrlError:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in LEGACY_KEYS:
        return CfgrlError(f"config key '{key}' is retired: {LEGACY_KEYS[leaf]}")
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return CfgrlError(f"unknown config key '{key}'{hint}; valid keys: see `cfgrl config`")


def all_keys() -> list[str]:
    return [f"{s}.{k}" for s in SECTIONS for k in _fields(_section_class(s))]


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a value against the field's annotation (``int | None``, ``list[float]``, ...)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if optional and len(args) == 1 else hint
    if value is None:
        if optional:
            return None
        raise CfgrlError(f"config key '{key}' may not be null")
    if typing.get_origin(base) is list:
        (elem,) = typing.get_args(base)
        items = value if isinstance(value, (list, tuple)) else [value]
        if elem is int:
            items = [n for item in items for n in _int_range(key, item)]
        return [_coerce(f"{key}[]", v, elem) for v in items]
    if base is bool and not isinstance(value, bool):
        raise CfgrlError(f"config key '{key}' expects true or false, got {value!r}")
    if base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CfgrlError(f"config key '{key}' expects an integer, got {value!r}")
    if base is float:
        if isinstance(value, str):  # PyYAML reads 1e-10 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CfgrlError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    if base is str and not isinstance(value, str):
        raise CfgrlError(f"config key '{key}' expects a string, got {value!r}")
    return value


def _int_range(key: str, item: Any) -> list[Any]:
    """An integer-list item written as an inclusive range, "50-499", expands to its integers."""
    if not isinstance(item, str) or not re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", item):
        return [item]
    first, last = (int(part) for part in item.split("-"))
    if last < first:
        raise CfgrlError(f"config key '{key}': range '{item.strip()}' is empty; write first-last with first <= last")
    return list(range(first, last + 1))


def _apply(cfg: Config, key: str, value: Any) -> None:
    section, _, leaf = key.partition(".")
    if section not in SECTIONS or not leaf:
        raise _unknown(key, all_keys())
    obj = getattr(cfg, section)
    hints = get_type_hints(type(obj))
    if leaf not in hints:
        raise _unknown(key, all_keys())
    setattr(obj, leaf, _coerce(key, value, hints[leaf]))


def _flatten(tree: dict[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in (tree or {}).items():
        if section in LEGACY_KEYS:
            raise CfgrlError(f"{where}: config key '{section}' is retired: {LEGACY_KEYS[section]}")
        if not isinstance(body, dict):
            raise _unknown(str(section), all_keys())
        for leaf, value in body.items():
            flat[f"{section}.{leaf}"] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value``; the value is read as YAML (so 0.2, true, null, [1, 2] work)."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise CfgrlError(f"override '{text}' is not of the form section.key=value (e.g. cfgrl.dropout_prob=0.2)")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise CfgrlError(f"override '{text}': the value is not valid YAML") from None


def key_value_pairs(items: list[str] | None, refuse: Callable[[str], str]) -> dict[str, str]:
    """``KEY=VALUE`` items as {KEY: VALUE}, each KEY once; ``refuse(item)`` is the line for a malformed
    or repeated one (``policy.camera_map``, ``cfgrl import --camera``)."""
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not (sep and key and value) or key in pairs:
            raise CfgrlError(refuse(item))
        pairs[key] = value
    return pairs


def camera_renames(items: list[str] | None) -> dict[str, str]:
    """``policy.camera_map`` as {checkpoint camera: env camera}."""
    renames = key_value_pairs(items, lambda item: f"policy.camera_map item '{item}' is not valid; give distinct "
                              "CHECKPOINT=ENV pairs, e.g. [base_0_rgb=agentview, left_wrist_0_rgb=wrist]")
    if len(set(renames.values())) != len(renames):
        raise CfgrlError(f"policy.camera_map {items} sends two checkpoint cameras to one env camera; map each to its own")
    return renames


# Numeric ranges beyond the checks in ``validate``: key -> (test, what is accepted). Every float is also
# finite (``_check_finite``): inf and nan pass ``x > 0`` or fail it silently, and train a NaN policy.
_AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_UNIT = (lambda v: 0 <= v < 1, "in [0, 1)")
RANGES = {
    **{f"{key}.seed": _AT_LEAST_0 for key in ("cfgrl", "value", "collect", "train", "evaluate")},
    "env.benchmark_seed": _AT_LEAST_0,
    "env.image_size": _AT_LEAST_1,
    "env.max_steps": _AT_LEAST_1,
    "collect.videos": _AT_LEAST_0,
    "evaluate.videos": _AT_LEAST_0,
    "train.warmup_steps": _AT_LEAST_0,
    "train.decay_steps": _AT_LEAST_1,
    "train.decay_lr": _AT_LEAST_0,
    "train.weight_decay": _AT_LEAST_0,
    "train.grad_clip": (lambda v: v >= 0, ">= 0 (0 = no clipping)"),
    "train.ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (or null = no EMA)"),
    "train.lora_rank": (lambda v: v >= 0, ">= 0 (0 = no LoRA)"),
    "train.lora_alpha": (lambda v: v > 0, "> 0"),
    "train.lora_dropout": _UNIT,
    "train.weighted_alpha": _AT_LEAST_0,
}


def _check_finite(key: str, value: Any) -> None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise CfgrlError(f"config key '{key}' must be a finite number, got {item}")


def _check_ranges(cfg: Config) -> None:
    """Every float finite and every numeric setting within its range, before anything is written."""
    for section in SECTIONS:
        for name in _fields(_section_class(section)):
            key, value = f"{section}.{name}", getattr(getattr(cfg, section), name)
            _check_finite(key, value)
            test, accepted = RANGES.get(key, (None, ""))
            if test is not None and value is not None and not test(value):
                raise CfgrlError(f"{key} must be {accepted}, got {value}")
    betas = cfg.train.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise CfgrlError(f"train.betas must be two numbers in [0, 1) (AdamW's beta1, beta2; e.g. [0.9, 0.95]), got {betas}")


def validate(cfg: Config) -> Config:
    """Range and choice checks that span all stages; each failure is one line naming what is accepted."""
    if not all(math.isfinite(w) and w >= 0 for w in cfg.evaluate.cfg_scales):  # evaluate's --cfg-scales says the same
        raise CfgrlError(f"evaluate.cfg_scales must all be finite numbers >= 0 (0 = unconditional, 1 = conditional), got {cfg.evaluate.cfg_scales}")
    _check_ranges(cfg)
    def choice(key: str, value: str, options: tuple[str, ...]) -> None:
        if value not in options:
            raise CfgrlError(f"{key} '{value}' is not valid; choose one of: {', '.join(options)}")

    choice("env.name", cfg.env.name, ENV_NAMES)
    if cfg.env.mesh_grid_mm < 0:
        raise CfgrlError(f"env.mesh_grid_mm must be >= 0 (0 = meshes as shipped; 10 suits 64-128 px), got {cfg.env.mesh_grid_mm}")
    choice("policy.condition_mode", cfg.policy.condition_mode, CONDITION_MODES)
    choice("policy.normalization", cfg.policy.normalization, NORMALIZATIONS)
    camera_renames(cfg.policy.camera_map)  # a malformed item fails at load, before any work
    if cfg.policy.max_token_len is not None and cfg.policy.max_token_len < 1:
        raise CfgrlError(f"policy.max_token_len must be at least 1 (or null for the policy's own), got {cfg.policy.max_token_len}")
    if cfg.policy.chunk_size is not None and cfg.policy.chunk_size < 1:
        raise CfgrlError(f"policy.chunk_size must be at least 1 (or null for the policy's own), got {cfg.policy.chunk_size}")
    choice("cfgrl.label_source", cfg.cfgrl.label_source, LABEL_SOURCES)
    choice("cfgrl.label_scheme", cfg.cfgrl.label_scheme, LABEL_SCHEMES)
    choice("cfgrl.zero_variance_groups", cfg.cfgrl.zero_variance_groups, ZERO_VARIANCE_POLICIES)
    choice("cfgrl.failed_episodes", cfg.cfgrl.failed_episodes, ("keep", "drop"))
    choice("cfgrl.window_return_reduce", cfg.cfgrl.window_return_reduce, ("sum", "mean"))
    choice("cfgrl.demonstrations", cfg.cfgrl.demonstrations, DEMONSTRATION_TREATMENTS)
    choice("train.objective", cfg.train.objective, OBJECTIVES)
    choice("train.stats", cfg.train.stats, ("checkpoint", "store"))
    choice("evaluate.protocol", cfg.evaluate.protocol, ("custom", "libero"))
    if not 0.0 <= cfg.cfgrl.dropout_prob <= 1.0:
        raise CfgrlError(f"cfgrl.dropout_prob must be in [0, 1], got {cfg.cfgrl.dropout_prob}")
    c = cfg.cfgrl
    if c.label_quantile is not None and not 0.0 < c.label_quantile < 1.0:
        raise CfgrlError(f"cfgrl.label_quantile must be in (0, 1) (0.7 = the top 30% of each task positive), got {c.label_quantile}")
    if c.label_quantile is not None and c.label_threshold is not None:
        raise CfgrlError("cfgrl.label_quantile and cfgrl.label_threshold are both set; set one of them (the other null)")
    v = cfg.value
    if v.failure_penalty < 0 or v.image_size < 4 or v.steps < 1 or v.batch_size < 1 or v.lr <= 0:
        raise CfgrlError(f"value.failure_penalty must be >= 0, value.image_size >= 4, value.steps and value.batch_size >= 1 "
                         f"and value.lr > 0, got {v.failure_penalty}, {v.image_size}, {v.steps}, {v.batch_size} and {v.lr}")
    if cfg.inference.cfg_scale < 0:
        raise CfgrlError(f"inference.cfg_scale must be >= 0 (0 = unconditional, 1 = conditional), got {cfg.inference.cfg_scale}")
    if not cfg.evaluate.cfg_scales:
        raise CfgrlError("evaluate.cfg_scales is empty; give at least one guidance weight >= 0")
    if cfg.collect.group_size < 2:
        raise CfgrlError(f"collect.group_size (K) must be at least 2 for leave-one-out baselines, got {cfg.collect.group_size}")
    if cfg.collect.groups < 1:
        raise CfgrlError(f"collect.groups must be at least 1, got {cfg.collect.groups}")
    if cfg.collect.workers is not None and cfg.collect.workers < 1:
        raise CfgrlError(f"collect.workers must be at least 1 (or null = fits the machine), got {cfg.collect.workers}")
    if cfg.collect.envs_per_worker < 1:
        raise CfgrlError(f"collect.envs_per_worker must be at least 1, got {cfg.collect.envs_per_worker}")
    if not cfg.collect.commit_seconds >= 0:  # also refuses nan
        raise CfgrlError(f"collect.commit_seconds must be >= 0 (0 = commit after every episode), got {cfg.collect.commit_seconds}")
    if cfg.collect.adaptive_patience < 1:
        raise CfgrlError(f"collect.adaptive_patience must be at least 1 (groups in a row with one outcome), got {cfg.collect.adaptive_patience}")
    t = cfg.train
    for key in ("steps", "batch_size", "grad_accum", "save_every", "log_every", "optimal_repeat"):
        if getattr(t, key) < 1:
            raise CfgrlError(f"train.{key} must be at least 1, got {getattr(t, key)}")
    if t.keep_last < 1 or t.keep_every < 0:
        raise CfgrlError(f"train.keep_last must be at least 1 and train.keep_every >= 0 (0 = off), got {t.keep_last} and {t.keep_every}")
    if t.optimal_repeat > 1 and t.objective != "cfgrl":
        raise CfgrlError(f"train.optimal_repeat applies to objective cfgrl only (filtered_bc trains on o=1 windows alone), got objective {t.objective}")
    if t.lr <= 0 or t.num_workers < 0:
        raise CfgrlError(f"train.lr must be > 0 and train.num_workers >= 0, got {t.lr} and {t.num_workers}")
    if cfg.inference.num_steps < 1 or cfg.inference.replan_steps < 1:
        raise CfgrlError("inference.num_steps and inference.replan_steps must be at least 1")
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Resolve the configuration: defaults < YAML file < environment < CLI overrides."""
    environ = os.environ if environ is None else environ
    for name, message in LEGACY_ENV.items():
        if name in environ:
            raise CfgrlError(message)
    cfg = Config()
    layers = [(str(DEFAULT_YAML), DEFAULT_YAML)]
    if path is not None:
        if not Path(path).is_file():
            raise CfgrlError(f"config file '{path}' does not exist")
        layers.append((str(path), Path(path)))
    for where, file in layers:
        try:
            tree = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise CfgrlError(f"{where} is not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise CfgrlError(f"{where} must be a mapping of sections (env, policy, cfgrl, ...)")
        for key, value in _flatten(tree, where).items():
            _apply(cfg, key, value)
    if "PI0_CFG_SCALE" in environ:
        raw = environ["PI0_CFG_SCALE"]
        try:
            _apply(cfg, "inference.cfg_scale", float(raw))
        except ValueError:
            raise CfgrlError(f"PI0_CFG_SCALE='{raw}' is not a number; give a guidance weight >= 0") from None
    for text in overrides or []:
        _apply(cfg, *parse_override(text))
    return validate(cfg)


def given_keys(path: str | Path | None, overrides: list[str] | None) -> set[str]:
    """The keys a user set: in their YAML file or an override (what ``--resume`` may not silently ignore)."""
    keys = {parse_override(text)[0] for text in overrides or []}
    if path is not None:
        keys |= set(_flatten(yaml.safe_load(Path(path).read_text()) or {}, str(path)))
    return keys


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a saved (resolved) configuration, e.g. from a checkpoint's ``config.json``."""
    cfg = Config()
    for key, value in _flatten(tree, "saved config").items():
        _apply(cfg, key, value)
    return validate(cfg)


def _yaml_scalar(value: Any) -> str:
    """JSON text that YAML 1.1 reads back as the same value (it needs a dot in 1.0e-10)."""
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value):
        return repr(value).replace("e", ".0e")
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(value)


def describe() -> str:
    """Every key with its default and help line, for ``cfgrl config``."""
    lines = []
    for section in SECTIONS:
        lines.append(f"{section}:")
        for name, f in _fields(_section_class(section)).items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {name}: {_yaml_scalar(default)}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of ``cfg`` with ``section.key=value`` overrides applied."""
    out = config_from_dict(cfg.to_dict())
    for text in overrides:
        _apply(out, *parse_override(text))
    return validate(out)
