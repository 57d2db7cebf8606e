"""`cfgrl inspect POLICY`: what a policy directory holds, read from its configs and its weights' key
names (never its tensors): layout, family, sizes, chunk, state input, stats kind, condition.

One function per layout returns the rows; a new field is one more row in each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfgrl.policy import layout as layouts

FAMILY = {"pi0": "π0", "pi05": "π0.5"}
STATE_INPUT = {"pi0": "a state token (state_proj)", "pi05": "in the prompt as 256-bin text"}
NEVER_TRAINED = "none in this layout: cfgrl adds one when it loads (never trained)"


def _sizes(config: dict[str, Any]) -> str:
    return (f"vision {config['vision_width']}x{config['vision_layers']}, prefix LM {config['prefix_width']}x{config['num_layers']}, "
            f"expert {config['expert_width']}x{config['num_layers']} (width x layers), preset {config.get('preset', '?')}")


def _ours(directory: Path, meta: dict[str, Any], family: str) -> list[tuple[str, str]]:
    config = meta["config"]
    stats_path = directory / "stats.json"
    stats = json.loads(stats_path.read_text()).get("kind", "mean_std") if stats_path.is_file() else None
    state = STATE_INPUT[family]
    if "discrete_state_input" in config:
        state = "in the prompt as 256-bin text" if config["discrete_state_input"] else "none (the model does not see the state)"
    dropout = "on" if config.get("use_prefix_dropout") else "off"
    trained = "yes" if meta.get("condition_trained") else "no (the policy is its base whatever w)"
    return [("sizes", _sizes(config)), ("chunk", f"{config['chunk_size']} actions"), ("state input", state),
            ("stats", stats or "none (cfgrl train computes them from the stores)"),
            ("condition", f"{config['condition_mode']} mode, prefix dropout {dropout}; trained: {trained}")]


def _lerobot(directory: Path, meta: dict[str, Any], family: str) -> list[tuple[str, str]]:
    from cfgrl.policy import lerobot_format

    kind = lerobot_format.stats_kind(meta, directory)
    stats = lerobot_format.read_stats(directory, [], kind)
    return [("sizes", _sizes(lerobot_format.config_values(meta, directory))), ("chunk", f"{layouts.chunk_size_of(directory)} actions"),
            ("state input", STATE_INPUT[family]), ("stats", stats.kind if stats is not None else "none (cfgrl train computes them from the stores)"),
            ("condition", NEVER_TRAINED)]


def _openpi(directory: Path, meta: dict[str, Any], family: str) -> list[tuple[str, str]]:
    from cfgrl.policy import openpi_format

    files = openpi_format.norm_stats_files(directory)
    state = STATE_INPUT[family] if family == "pi0" else "not recorded by openpi: give discrete_state_input when loading"
    return [("sizes", f"{meta.get('paligemma_variant')} + {meta.get('action_expert_variant')} ({meta.get('precision')})"),
            ("chunk", f"{meta['action_horizon']} actions"), ("state input", state),
            ("stats", f"{openpi_format.KIND[family]} ({files[0].relative_to(directory)})" if files else "none (cfgrl train computes them from the stores)"),
            ("condition", NEVER_TRAINED)]


ROWS = {"cfgrl": (_ours, ""), "lerobot": (_lerobot, "model."), "openpi": (_openpi, "")}


def describe_policy(directory: Path) -> str:
    meta = layouts.read_config(directory)
    kind = layouts.layout_of(meta)
    if kind is None:
        from cfgrl.errors import CfgrlError

        raise CfgrlError(f"{directory} is neither a cfgrl policy nor a lerobot or openpi checkpoint (config.json has no known format)")
    rows_of, prefix = ROWS[kind]
    family = layouts.family_of_weights(layouts.weight_keys(directory), prefix, str(directory / "model.safetensors"))
    rows = [("layout", kind), ("family", FAMILY[family]), *rows_of(directory, meta, family)]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"policy {directory}"] + [f"  {name.ljust(width)}  {value}" for name, value in rows])
