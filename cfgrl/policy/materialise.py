"""A policy built from a checkpoint's tensors, whatever layout they were read from: its parameters
made on the meta device and given the tensors themselves (no copy), condition parameters the
checkpoint lacks initialised afresh where allowed, any other mismatch of keys one clear error; and
the tokenizer it was saved with or is given."""

from __future__ import annotations

from pathlib import Path

import torch

from cfgrl.errors import CfgrlError
from cfgrl.policy.config import PI0Config
from cfgrl.policy.normalize import NormStats
from cfgrl.policy.tokenizer import make_tokenizer


def materialise(cls, config: PI0Config, stats: NormStats | None, tokenizer, state: dict[str, torch.Tensor], directory: Path,
                new_condition: bool):
    """A policy whose weights are the tensors of ``state`` themselves (no copy): built with its parameters
    on the meta device, then assigned. With ``new_condition``, condition parameters ``state`` lacks are
    initialised afresh; any other key missing or unexpected is one clear error. Returns the policy and
    the condition keys that were initialised."""
    from accelerate import init_empty_weights

    from cfgrl.policy.condition import Condition

    with init_empty_weights():  # parameters on the meta device; buffers (RoPE frequencies) computed as usual
        policy = cls(config, stats=stats, tokenizer=tokenizer)
    result = policy.model.load_state_dict(state, strict=False, assign=True)
    fresh = [k for k in result.missing_keys if k.startswith("condition.")] if new_condition else []
    _check_keys([k for k in result.missing_keys if k not in fresh], list(result.unexpected_keys), directory)
    if fresh:
        policy.model.condition = Condition(config).to(policy.dtype)
    left = [name for name, t in [*policy.named_parameters(), *policy.named_buffers()] if t.is_meta]
    if left:
        raise CfgrlError(f"{directory}: internal error, no weights for {', '.join(left[:5])} after loading")
    return policy, fresh


def tokenizer_of(config: PI0Config, directory: Path, path: str | Path | None):
    """The saved or given tokenizer; a pi0 checkpoint without one loads, and fails clearly when prompted."""
    from cfgrl.policy.tokenizer import SENTENCEPIECE_FILE

    if config.tokenizer == "sentencepiece" and path is None and not (directory / SENTENCEPIECE_FILE).is_file():
        return None
    return make_tokenizer(config.tokenizer, config.max_token_len, directory, path)


def _check_keys(missing: list[str], unexpected: list[str], directory: Path) -> None:
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(sorted(missing)[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(sorted(unexpected)[:10])}{' ...' if len(unexpected) > 10 else ''}")
        raise CfgrlError(f"{directory}/model.safetensors does not match the policy architecture ({'; '.join(parts)})")
