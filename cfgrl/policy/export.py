"""Exporting a policy to lerobot's layout of its family (pi0 or pi05, ``cfgrl export``): the policy as
it samples at w = 1, a trained condition folded into the weights, written into a directory whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy import lerobot_format
from cfgrl.policy.checkpoint_files import contiguous, write_atomically


def exported_state(policy) -> dict[str, torch.Tensor]:
    """The weights lerobot's pi0 / pi05 gets: the policy as it samples at w = 1, without condition parameters.

    A trained condition is folded in: bias and concat modes add the o = 1 class to one layer's output,
    which that layer's bias absorbs exactly. The w = 1 branch keeps the prompt even under prefix
    dropout, as lerobot's pi0 always does. A token- or text-mode condition cannot be folded (CfgrlError); a
    never-trained one is not used when sampling, so the plain network is exported as it is.
    """
    state = policy.weights()
    if policy.condition_trained:
        with torch.no_grad():
            layer, shift = policy.model.condition.folded_shift(Label.OPTIMAL)
            bias = state[f"{layer}.bias"]
            state[f"{layer}.bias"] = (bias.float() + shift.float()).to(bias.dtype)
    return state


def export_lerobot(policy, directory: Path) -> Path:
    """Write ``policy`` in lerobot's layout of its family (pi0 or pi05): its conditional policy (w = 1), see
    ``exported_state``."""
    if policy.config.family == "pi05" and not policy.config.discrete_state_input:
        raise CfgrlError("a π0.5 without discrete_state_input cannot be exported to lerobot's pi05, which always writes the "
                         "state into the prompt; export a policy trained with policy.discrete_state_input=true")
    state = exported_state(policy)  # refuses a token-mode condition before anything is written

    def fill(staging: Path) -> None:
        weights, stats = lerobot_format.from_ours(state, policy.stats)
        save_file(contiguous(weights), str(staging / "model.safetensors"))
        save_file(contiguous(stats), str(staging / lerobot_format.STATS_FILE))
        kind = policy.stats.kind if policy.stats is not None else "mean_std"
        (staging / "config.json").write_text(json.dumps(lerobot_format.config_json(policy.config, kind), indent=1))
        (staging / lerobot_format.SIZES_FILE).write_text(json.dumps(lerobot_format.sizes_json(policy.config), indent=1))
        if policy.config.tokenizer == "sentencepiece" and policy.holds_tokenizer:  # one loaded without it exports without it
            policy.tokenizer.save(staging)

    return write_atomically(directory, fill)
