"""PI0-family architecture settings and the presets (pi0, mini, small, tiny; pi05, pi05_mini, pi05_small, pi05_tiny).

The config is a flat frozen dataclass: the family (pi0 or pi05), every size of the three towers
(SigLIP vision, Gemma prefix LM, Gemma action expert), the chunk/padding sizes, the cameras, how
π0.5 reads the state and the CFGRL condition settings. It is saved verbatim in a checkpoint's
``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cfgrl.errors import CfgrlError

CONDITION_MODES = ("token", "bias", "concat", "text")
FAMILIES = ("pi0", "pi05")
NUM_CONDITION_CLASSES = 2  # the learned classes (cfgrl.optimality.Label 1 and 0); ∅ has no parameters at all


@dataclass(frozen=True)
class PI0Config:
    preset: str = "tiny"
    # pi0: state token + action-time MLP; pi05: adaptive RMSNorm expert on the flow time, state in the prompt
    family: str = "pi0"
    # vision tower (SigLIP, no pooling head)
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 128
    # prefix language model (Gemma) and action expert (Gemma without embeddings); one layer each per step
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 16
    prefix_width: int = 64
    prefix_mlp: int = 128
    vocab_size: int = 259
    expert_width: int = 64
    expert_mlp: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # robot interface
    camera_names: tuple[str, ...] = ("agentview", "wrist")
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    max_token_len: int = 48
    tokenizer: str = "byte"  # byte (built by cfgrl, saved as JSON) | sentencepiece (PaliGemma model file)
    num_steps: int = 10
    # pi05 only: the state, normalised to [-1, 1], is written as 256-bin integers into the prompt; else unseen
    discrete_state_input: bool = False
    # CFGRL condition
    condition_mode: str = "token"
    use_prefix_dropout: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_names", tuple(self.camera_names))
        if self.family not in FAMILIES:
            raise CfgrlError(f"unknown policy family {self.family!r}; accepted: {', '.join(FAMILIES)}")
        if self.discrete_state_input and self.family != "pi05":
            raise CfgrlError("discrete_state_input is a pi05 setting (the state in the prompt); pi0 reads the state as a token")
        if self.condition_mode not in CONDITION_MODES:
            raise CfgrlError(
                f"unknown condition_mode {self.condition_mode!r}; accepted: {', '.join(CONDITION_MODES)}"
            )
        if self.tokenizer not in ("byte", "sentencepiece"):
            raise CfgrlError(f"unknown tokenizer kind {self.tokenizer!r}; accepted: byte, sentencepiece")
        if not 0 < self.state_dim <= self.max_state_dim:
            raise CfgrlError(f"state_dim {self.state_dim} must be in 1..{self.max_state_dim}")
        if not 0 < self.action_dim <= self.max_action_dim:
            raise CfgrlError(f"action_dim {self.action_dim} must be in 1..{self.max_action_dim}")
        if self.image_size % self.patch_size:
            raise CfgrlError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.num_heads % self.num_kv_heads:
            raise CfgrlError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")
        if not self.camera_names:
            raise CfgrlError("camera_names must name at least one camera")
        if self.num_steps < 1:
            raise CfgrlError(f"num_steps must be at least 1, got {self.num_steps}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PI0Config":
        if name not in PRESETS:
            raise CfgrlError(f"unknown policy preset {name!r}; accepted: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "preset": name, **overrides})

    @classmethod
    def fresh(cls, policy: Any, **overrides: Any) -> "PI0Config":
        """A fresh policy's config from the user's ``policy`` settings (cfgrl.config.PolicyConfig)."""
        if policy.discrete_state_input is not None:
            overrides["discrete_state_input"] = policy.discrete_state_input
        if policy.chunk_size is not None:
            overrides["chunk_size"] = policy.chunk_size
        if policy.max_token_len is not None:
            overrides["max_token_len"] = policy.max_token_len
        return cls.from_preset(policy.preset, condition_mode=policy.condition_mode, **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PI0Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CfgrlError(f"unknown PI0 config field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["camera_names"] = list(self.camera_names)
        return out

    def replace(self, **changes: Any) -> "PI0Config":
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


PRESETS: dict[str, dict[str, Any]] = {
    # The published PI0: SigLIP So400m/14 + Gemma 2B prefix + Gemma 300M action expert.
    "pi0": dict(
        image_size=224, patch_size=14, vision_width=1152, vision_layers=27, vision_heads=16, vision_mlp=4304,
        num_layers=18, num_heads=8, num_kv_heads=1, head_dim=256, prefix_width=2048, prefix_mlp=16384,
        vocab_size=257152, expert_width=1024, expert_mlp=4096, tokenizer="sentencepiece",
    ),
    # PI0's depths and token counts with every width divided by 8 (8 heads of width/8 each).
    "mini": dict(
        image_size=224, patch_size=14, vision_width=144, vision_layers=27, vision_heads=8, vision_mlp=538,
        num_layers=18, num_heads=8, num_kv_heads=1, head_dim=32, prefix_width=256, prefix_mlp=2048,
        vocab_size=259, expert_width=128, expert_mlp=512, tokenizer="byte",
    ),
    # Small enough for a training step and a 10-step sample well under a second on 2 CPU cores. 32
    # byte tokens hold a short prompt ("grasp the bottom right ball" is 29 with BOS and newline); padding
    # to PI0's 48 would make a fifth of every sequence padding.
    "tiny": dict(
        image_size=224, patch_size=16, vision_width=64, vision_layers=2, vision_heads=4, vision_mlp=128,
        num_layers=2, num_heads=4, num_kv_heads=1, head_dim=16, prefix_width=64, prefix_mlp=128,
        vocab_size=259, expert_width=64, expert_mlp=128, tokenizer="byte", max_token_len=32,
    ),
    # Between tiny and mini (mini costs ~34x tiny per sample on Meta-World): twice tiny's depth and
    # width with tiny's tokens, so it replaces tiny in a CPU configuration and an 8000-step run stays
    # affordable (its cost against tiny: bench/preset_cost.py).
    "small": dict(
        image_size=224, patch_size=16, vision_width=128, vision_layers=4, vision_heads=4, vision_mlp=256,
        num_layers=4, num_heads=4, num_kv_heads=1, head_dim=32, prefix_width=128, prefix_mlp=256,
        vocab_size=259, expert_width=128, expert_mlp=256, tokenizer="byte", max_token_len=32,
    ),
}
# π0.5 has PI0's towers; its prompt carries the state ("Task: ..., State: 8 bins;\nAction: "), so the
# token length is lerobot's 200 for the published sizes and 128 for the byte-tokenised small ones
# (the built-in env's longest prompt with its 8-d state is 84 byte tokens with BOS).
PRESETS.update({
    f"pi05{suffix}": {**PRESETS[base], "family": "pi05", "discrete_state_input": True, "max_token_len": length}
    for suffix, base, length in (("", "pi0", 200), ("_mini", "mini", 128), ("_small", "small", 128), ("_tiny", "tiny", 128))
})

