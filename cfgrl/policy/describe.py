"""`cfgrl inspect POLICY`: what a policy directory holds, read from its configs and its weights' key
names (never its tensors): layout, family, sizes, chunk, state input, stats kind, condition.

One function per layout returns the rows; a new field is one more row in each. The family and the
state input come from the config where it records them (ours, lerobot's); openpi's records neither,
so its weights tell the family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfgrl.policy import layout as layouts
from cfgrl.policy.config import PI0Config
from cfgrl.policy.normalize import NormStats

FAMILY = {"pi0": "π0", "pi05": "π0.5"}
NO_STATS = "none (cfgrl train computes them from the stores)"
NEVER_TRAINED = "none in this layout: cfgrl adds one when it loads (never trained)"


def _state_input(family: str, discrete_state_input: bool | None) -> str:
    """How the model reads the state; ``discrete_state_input`` None: not recorded (openpi's π0.5)."""
    if family == "pi0":
        return "a state token (state_proj)"
    if discrete_state_input is None:
        return "not recorded by openpi: give discrete_state_input when loading"
    return "in the prompt as 256-bin text" if discrete_state_input else "none (the model does not see the state)"


def _sizes(config: PI0Config) -> str:
    return (f"vision {config.vision_width}x{config.vision_layers}, prefix LM {config.prefix_width}x{config.num_layers}, "
            f"expert {config.expert_width}x{config.num_layers} (width x layers), preset {config.preset}")


def _config_rows(config: PI0Config) -> list[tuple[str, str]]:
    return [("family", FAMILY[config.family]), ("sizes", _sizes(config)), ("chunk", f"{config.chunk_size} actions"),
            ("state input", _state_input(config.family, config.discrete_state_input))]


def _ours(directory: Path, meta: dict[str, Any]) -> list[tuple[str, str]]:
    config = PI0Config.from_dict(meta["config"])  # fields an older checkpoint lacks take their defaults, as on loading
    stats_path = directory / "stats.json"
    stats = NormStats.load(stats_path).kind if stats_path.is_file() else NO_STATS
    dropout = "on" if config.use_prefix_dropout else "off"
    trained = "yes" if meta.get("condition_trained") else "no (the policy is its base whatever w)"
    return [*_config_rows(config), ("stats", stats),
            ("condition", f"{config.condition_mode} mode, prefix dropout {dropout}; trained: {trained}")]


def _lerobot(directory: Path, meta: dict[str, Any]) -> list[tuple[str, str]]:
    from cfgrl.policy import lerobot_format

    config = PI0Config.from_dict(lerobot_format.config_values(meta, directory))
    lerobot_format.check_family(config.family, layouts.weight_keys(directory), directory)  # as loading it would
    stats = lerobot_format.read_stats(directory, [], lerobot_format.stats_kind(meta, directory))
    return [*_config_rows(config), ("stats", stats.kind if stats is not None else NO_STATS), ("condition", NEVER_TRAINED)]


def _openpi(directory: Path, meta: dict[str, Any]) -> list[tuple[str, str]]:
    from cfgrl.policy import openpi_format

    family = layouts.family_of_weights(layouts.weight_keys(directory), "", str(directory / "model.safetensors"))
    files = openpi_format.norm_stats_files(directory)
    return [("family", FAMILY[family]),
            ("sizes", f"{meta.get('paligemma_variant')} + {meta.get('action_expert_variant')} ({meta.get('precision')})"),
            ("chunk", f"{meta['action_horizon']} actions"), ("state input", _state_input(family, None)),
            ("stats", f"{openpi_format.KIND[family]} ({files[0].relative_to(directory)})" if files else NO_STATS),
            ("condition", NEVER_TRAINED)]


ROWS = {"cfgrl": _ours, "lerobot": _lerobot, "openpi": _openpi}


def describe_policy(directory: Path) -> str:
    meta = layouts.read_config(directory)
    kind = layouts.known_layout(meta, directory)
    rows = [("layout", kind), *ROWS[kind](directory, meta)]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"policy {directory}"] + [f"  {name.ljust(width)}  {value}" for name, value in rows])
