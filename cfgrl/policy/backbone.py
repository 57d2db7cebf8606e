"""PI0's two-stream transformer: SigLIP + Gemma prefix LM + Gemma action expert, one joint attention.

Built from transformers' SigLIP vision model and Gemma layer components; the joint-attention loop is
ours. At every layer each stream (prefix tokens through the Gemma LM weights, suffix tokens through the
expert weights) applies its own input norm and q/k/v projections; the q/k/v of both streams are
concatenated along the sequence, rotated with RoPE and attend jointly under one mask; each stream then
applies its own output projection, residual, norm and MLP.

A KV cache of the prefix (per layer, keys after RoPE) lets sampling run the prefix once and then only
the suffix stream at every Euler step.

π0.5's expert differs in its norms only: each (both per layer, and the final one) is an adaptive
RMSNorm whose scale, shift and gate come from a conditioning vector (the flow time's embedding), and
the gate multiplies the residual branch that follows it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GemmaConfig, SiglipVisionConfig
from transformers.models.gemma.modeling_gemma import (
    GemmaDecoderLayer,
    GemmaRMSNorm,
    GemmaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

from cfgrl.policy.config import PI0Config

# Additive logit for masked pairs: the most negative bfloat16-safe value, as PI0 uses.
MASK_VALUE = -2.3819763e38
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def gemma_config(cfg: PI0Config, width: int, mlp: int) -> GemmaConfig:
    config = GemmaConfig(
        vocab_size=cfg.vocab_size, hidden_size=width, intermediate_size=mlp, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        hidden_act="gelu_pytorch_tanh", rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )
    config._attn_implementation = "eager"
    return config


class AdaptiveRMSNorm(nn.Module):
    """RMSNorm modulated by a conditioning vector: ``dense(cond)`` gives a scale, a shift and a gate;
    the output is ``rms_normed(x) * (1 + scale) + shift`` and the gate scales the following residual
    branch. It has no weight of its own (the scale comes from ``dense``)."""

    def __init__(self, width: int, cond_width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_width, 3 * width)
        nn.init.zeros_(self.dense.weight)  # as lerobot and openpi: a fresh norm ignores the time; its bias is random

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normed x, gate), both (B, S, width); ``cond`` is (B, cond_width)."""
        dtype = x.dtype
        normed = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond)[:, None].chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(dtype), gate.to(dtype)


class GemmaStack(nn.Module):
    """Gemma decoder layers and final norm (and token embeddings for the prefix LM only); with
    ``adaptive_cond`` (its width) every norm is an ``AdaptiveRMSNorm`` (π0.5's expert)."""

    def __init__(self, config: GemmaConfig, with_embeddings: bool, adaptive_cond: int | None = None) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size) if with_embeddings else None
        self.layers = nn.ModuleList(GemmaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if adaptive_cond is not None:
            norm = lambda: AdaptiveRMSNorm(config.hidden_size, adaptive_cond, config.rms_norm_eps)  # noqa: E731
            for layer in self.layers:
                layer.input_layernorm, layer.post_attention_layernorm = norm(), norm()
            self.norm = norm()
        self.adaptive = adaptive_cond is not None


def apply_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(normed x, residual gate or None) for a plain or an adaptive norm."""
    return norm(x, cond) if isinstance(norm, AdaptiveRMSNorm) else (norm(x), None)


def gated(residual: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return residual + branch if gate is None else residual + branch * gate


def make_attention_mask(pad: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """PI0's block mask: i attends to j iff cumsum(flags)[j] <= cumsum(flags)[i] and neither is padding."""
    blocks = torch.cumsum(flags.long(), dim=1)
    allowed = blocks[:, None, :] <= blocks[:, :, None]
    return allowed & pad[:, None, :] & pad[:, :, None]


def additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, Q, K) bool -> (B, 1, Q, K) float32 logit offsets."""
    return torch.where(mask[:, None], 0.0, MASK_VALUE).to(torch.float32)


class JointTransformer(nn.Module):
    def __init__(self, cfg: PI0Config) -> None:
        super().__init__()
        self.cfg = cfg
        vision_config = SiglipVisionConfig(
            hidden_size=cfg.vision_width, intermediate_size=cfg.vision_mlp, num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False,
        )
        vision_config._attn_implementation = "sdpa"
        self.vision = SiglipVisionModel(vision_config)
        self.projector = nn.Linear(cfg.vision_width, cfg.prefix_width)
        prefix_config = gemma_config(cfg, cfg.prefix_width, cfg.prefix_mlp)
        self.prefix_lm = GemmaStack(prefix_config, with_embeddings=True)
        adaptive = cfg.expert_width if cfg.family == "pi05" else None  # π0.5 conditions on the time MLP's output
        self.expert = GemmaStack(gemma_config(cfg, cfg.expert_width, cfg.expert_mlp), with_embeddings=False, adaptive_cond=adaptive)
        self.rotary = GemmaRotaryEmbedding(prefix_config)
        # one module per layer index running both streams: FSDP's unit (it holds no parameter of its own)
        self.pairs = nn.ModuleList(LayerPair(p, e, cfg.head_dim) for p, e in zip(self.prefix_lm.layers, self.expert.layers))
        self.gradient_checkpointing = False

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, tokens_per_image, prefix_width)."""
        dtype = self.projector.weight.dtype
        features = self.vision(pixel_values=pixels.to(dtype)).last_hidden_state
        return self.projector(features)

    def embed_language(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.prefix_lm.embed_tokens(tokens) * math.sqrt(self.cfg.prefix_width)

    def forward(
        self,
        prefix: torch.Tensor | None,
        suffix: torch.Tensor | None,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
        build_cache: bool = False,
        expert_cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, KVCache | None]:
        """Run both streams (or one) through every layer.

        ``mask`` (B, Q, K) bool over queries = the given tokens and keys = cache + given tokens.
        ``expert_cond`` (B, expert_width) conditions an adaptive expert's norms (π0.5; None for PI0).
        Returns the expert stream's final-normed output (None without a suffix) and, with
        ``build_cache``, the per-layer keys/values of the given tokens.
        """
        if suffix is not None and self.expert.adaptive != (expert_cond is not None):
            raise ValueError("an adaptive-norm expert needs expert_cond, a plain one takes none")
        hidden = [prefix, suffix]
        offsets = additive(mask)
        cos, sin = self.rotary(next(h for h in hidden if h is not None), positions)
        new_cache: KVCache = []
        for i, pair in enumerate(self.pairs):
            past = cache[i] if cache is not None else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden, kv = checkpoint(pair, hidden, offsets, cos, sin, past, expert_cond, use_reentrant=False)
            else:
                hidden, kv = pair(hidden, offsets, cos, sin, past, expert_cond)
            if build_cache:
                new_cache.append(kv)
        out = apply_norm(self.expert.norm, hidden[1], expert_cond)[0] if hidden[1] is not None else None
        return out, (new_cache if build_cache else None)


class LayerPair(nn.Module):
    """Layer i of the prefix LM and layer i of the expert, run as one joint layer.

    Each stream applies its own input norm and q/k/v projections; the q/k/v of both are concatenated
    along the sequence, rotated and attend jointly under one mask; each stream then applies its own
    output projection, residual, norm and MLP. The pair is one module so that FSDP can shard and gather
    both layers as one unit around its forward. It registers no parameter: the layers stay in their
    stacks (``prefix_lm.layers.i``, ``expert.layers.i``), so every key is what it always was.
    """

    def __init__(self, prefix_layer: nn.Module, expert_layer: nn.Module, head_dim: int) -> None:
        super().__init__()
        self.layers = (prefix_layer, expert_layer)  # a tuple: referenced, not registered
        self.head_dim = head_dim
        self.scaling = head_dim**-0.5

    def forward(self, hidden, offsets, cos, sin, past, expert_cond):
        """One layer of both streams: ``hidden`` [prefix or None, suffix or None]; returns their outputs and
        this layer's (keys, values) of the given tokens (keys after RoPE)."""
        layers = self.layers
        conds = (None, expert_cond)
        queries, keys, values, gates = [], [], [], []
        for h, layer, cond in zip(hidden, layers, conds):
            if h is None:
                gates.append(None)
                continue
            x, gate = apply_norm(layer.input_layernorm, h, cond)
            gates.append(gate)
            shape = (*x.shape[:-1], -1, self.head_dim)
            queries.append(layer.self_attn.q_proj(x).view(shape).transpose(1, 2))
            keys.append(layer.self_attn.k_proj(x).view(shape).transpose(1, 2))
            values.append(layer.self_attn.v_proj(x).view(shape).transpose(1, 2))
        q, k = apply_rotary_pos_emb(torch.cat(queries, 2), torch.cat(keys, 2), cos, sin)
        v = torch.cat(values, 2)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        attended = self._attention(q, k, v, offsets)

        outputs, start = [], 0
        for h, layer, cond, gate in zip(hidden, layers, conds, gates):
            if h is None:
                outputs.append(None)
                continue
            end = start + h.shape[1]
            x = gated(h, layer.self_attn.o_proj(attended[:, start:end]), gate)
            normed, mlp_gate = apply_norm(layer.post_attention_layernorm, x, cond)
            outputs.append(gated(x, layer.mlp(normed), mlp_gate))
            start = end
        return outputs, kv

    def _attention(self, q, k, v, offsets):
        """Softmax(q k^T * scale + offsets) v over all heads; one KV head is shared by all query heads.

        PyTorch's fused kernel accumulates the softmax in float32 for every input dtype (as PI0 demands)
        and never materialises the (heads, Q, K) logits, which dominate the prefix pass otherwise.
        """
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=offsets.to(q.dtype), scale=self.scaling, enable_gqa=True)
        out = out.transpose(1, 2)
        return out.reshape(*out.shape[:2], -1)
