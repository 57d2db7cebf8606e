"""Saving a policy in cfgrl's own layout (described in the docstring of ``cfgrl.policy.checkpoint``):
its weights and their id, config, normalisation stats and tokenizer, written into a directory whole."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from cfgrl.policy.checkpoint_files import contiguous, write_atomically
from cfgrl.schemas import POLICY

STATS_FILE = "stats.json"


def write_policy_files(policy, directory: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """The checkpoint's files into an existing ``directory``: ``weights`` (default: ``policy.weights()``;
    a sharded run passes the gathered ones) and their id, the config, stats and tokenizer."""
    weights = policy.weights() if weights is None else weights  # with LoRA: merged once, for the file and the id
    save_file(contiguous(weights), str(directory / "model.safetensors"))
    if policy.stats is not None:
        policy.stats.save(directory / STATS_FILE)
    policy.tokenizer.save(directory)
    meta = {
        **POLICY.stamp(), "policy_id": policy.id_of(weights),
        "condition_trained": policy.condition_trained, "config": policy.config.to_dict(),
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=1))


def save_policy(policy, directory: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    return write_atomically(directory, lambda staging: write_policy_files(policy, staging, weights))
