"""PI0Model: the tensor-level PI0 (lerobot-compatible inputs) with CFGRL conditioning and guidance.

Inputs are already model-ready: images (B, 3, S, S) in [-1, 1] per camera with (B,) masks, language
token ids and masks, state padded to ``max_state_dim`` and actions padded to ``max_action_dim``,
both normalised. Flow matching follows PI0: time t=1 is pure noise, t=0 the data.

Every forward is either conditioned, with one ``Label`` per sample (``o``), or the plain base PI0
(``plain=True``: no condition machinery, every prompt kept). The two differ only under prefix
dropout, where a ∅ sample also loses its prompt; without it, ∅ is bit for bit the plain model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy.backbone import KVCache, JointTransformer, make_attention_mask
from cfgrl.policy.condition import Condition, any_conditioned, check_labels
from cfgrl.policy.config import PI0Config


def sinusoidal_time_embedding(time: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """[sin(2 pi t / p_k), cos(2 pi t / p_k)] with periods geometric from min_period to max_period."""
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * time.to(torch.float64)[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(time.dtype)


def flow_time(uniform: torch.Tensor) -> torch.Tensor:
    """PI0's training time distribution, Beta(1.5, 1) squeezed into [0.001, 1], from uniform draws in
    [0, 1) by inverse CDF (F(x) = x^1.5, so x = u^(2/3)). The caller draws the uniforms, from the
    generator it needs (the trainer keys one per window); torch's Beta sampler takes no generator."""
    return uniform ** (1 / 1.5) * 0.999 + 0.001


class PI0Model(nn.Module):
    def __init__(self, cfg: PI0Config) -> None:
        super().__init__()
        self.config = cfg
        width = cfg.expert_width
        self.transformer = JointTransformer(cfg)
        self.state_proj = nn.Linear(cfg.max_state_dim, width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, cfg.max_action_dim)
        self.condition = Condition(cfg)

    # ----- token sequences -------------------------------------------------------------------------
    def embed_prefix(self, images, img_masks, lang_tokens, lang_masks, drop_language=None):
        """Image tokens of every camera, then language tokens; all in one bidirectional block.

        ``drop_language`` (B,) bool marks samples whose language tokens become padding (prefix dropout).
        """
        batch, cameras = lang_tokens.shape[0], len(images)
        image_tokens = self.transformer.embed_images(torch.cat(list(images), 0)).chunk(cameras, 0)
        per_image = image_tokens[0].shape[1]
        language = self.transformer.embed_language(lang_tokens).to(image_tokens[0].dtype)
        if drop_language is not None:
            lang_masks = lang_masks & ~drop_language[:, None]
        embeddings = torch.cat([*image_tokens, language], 1)
        pad = torch.cat([*(m[:, None].expand(batch, per_image) for m in img_masks), lang_masks.bool()], 1)
        return embeddings, pad, torch.zeros_like(pad)

    def embed_suffix(self, state, noisy_actions, time, o):
        """[condition token], state token, action tokens; ∅ rows get no condition machinery at all
        (an all-∅ batch is exactly the plain PI0's suffix)."""
        batch, horizon = noisy_actions.shape[:2]
        dtype = self.action_in_proj.weight.dtype
        state_token = self.state_proj(state.to(dtype))[:, None]
        time_embedding = sinusoidal_time_embedding(time, self.config.expert_width).to(dtype)
        action_embedding = self.action_in_proj(noisy_actions.to(dtype))
        mixed = self.action_time_mlp_in(torch.cat([action_embedding, time_embedding[:, None].expand_as(action_embedding)], 2))
        mode = self.config.condition_mode if any_conditioned(o) else None
        if mode == "concat":
            mixed = self.condition.add_concat(mixed, o)
        action_tokens = self.action_time_mlp_out(F.silu(mixed))
        if mode == "bias":
            action_tokens = self.condition.add_bias(action_tokens, o)

        device = state.device
        ones = lambda n: torch.ones(batch, n, dtype=torch.bool, device=device)  # noqa: E731
        action_flags = torch.zeros(batch, horizon, dtype=torch.bool, device=device)
        action_flags[:, 0] = True  # actions form one block after the state's block
        if mode == "token":
            token, token_pad = self.condition.token(o, dtype)
            tokens = torch.cat([token, state_token, action_tokens], 1)
            pad = torch.cat([token_pad, ones(1 + horizon)], 1)
            # the token opens the state's block, so state and actions see it and the prefix never does
            flags = torch.cat([ones(1), ~ones(1), action_flags], 1)
        else:
            tokens = torch.cat([state_token, action_tokens], 1)
            pad = ones(1 + horizon)
            flags = torch.cat([ones(1), action_flags], 1)
        return tokens, pad, flags

    @staticmethod
    def _labels(o: torch.Tensor | None, plain: bool, batch: int, device) -> torch.Tensor:
        """The labels of one forward: ``o`` checked, or for the plain PI0 (which takes none) all ∅."""
        if not plain:
            return check_labels(o, batch)
        if o is not None:
            raise CfgrlError("plain=True is the base PI0 without condition machinery and takes no labels o; pass labels or plain=True, not both")
        return torch.full((batch,), int(Label.NULL), dtype=torch.long, device=device)

    def _language_drop(self, o: torch.Tensor, plain: bool) -> torch.Tensor | None:
        """(B,) rows whose prompt becomes padding: the ∅ rows under prefix dropout; none for the plain PI0."""
        return o == Label.NULL if self.config.use_prefix_dropout and not plain else None

    # ----- training --------------------------------------------------------------------------------
    def velocity(self, images, img_masks, lang_tokens, lang_masks, state, x_t, time, o=None, plain=False):
        """v(x_t, t | o) from one joint forward of prefix and suffix (no cache); ``plain=True`` instead of o
        is the base PI0."""
        o = self._labels(o, plain, state.shape[0], state.device)
        drop = self._language_drop(o, plain)
        prefix, prefix_pad, prefix_flags = self.embed_prefix(images, img_masks, lang_tokens, lang_masks, drop)
        suffix, suffix_pad, suffix_flags = self.embed_suffix(state, x_t, time, o)
        pad = torch.cat([prefix_pad, suffix_pad], 1)
        mask = make_attention_mask(pad, torch.cat([prefix_flags, suffix_flags], 1))
        positions = torch.cumsum(pad.long(), 1) - 1
        out, _ = self.transformer(prefix, suffix.to(prefix.dtype), mask, positions)
        return self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)).float()

    def forward(self, images, img_masks, lang_tokens, lang_masks, state, actions, noise=None, time=None, o=None, plain=False):
        """Element-wise flow-matching losses (B, chunk, max_action_dim): x_t = t eps + (1-t) a, target eps - a.

        Each sample under its label ``o`` (required), or every sample the base PI0 with ``plain=True``."""
        batch = actions.shape[0]
        noise = torch.randn_like(actions) if noise is None else noise
        time = flow_time(torch.rand(batch)).to(actions.device) if time is None else time
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        v_t = self.velocity(images, img_masks, lang_tokens, lang_masks, state, x_t, time, o, plain)
        return F.mse_loss(target.float(), v_t, reduction="none")

    # ----- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(
        self, images, img_masks, lang_tokens, lang_masks, state, noise=None, cfg_scale=1.0, plain=False, num_steps=None
    ):
        """Euler integration from t=1 (noise) to t=0 with the guided velocity v_null + w (v_1 - v_null).

        w=1 runs the conditional branch only, w=0 the unconditional only; any other w runs both in ONE
        batched suffix pass per step over the shared prefix cache (two prefixes under prefix dropout).
        ``plain=True`` is the base PI0 whatever w: no condition machinery, the prompt always kept.
        """
        w = validate_cfg_scale(cfg_scale)
        batch, device = state.shape[0], state.device
        num_steps = self.config.num_steps if num_steps is None else int(num_steps)
        if num_steps < 1:
            raise CfgrlError(f"num_steps must be at least 1, got {num_steps}")
        if noise is None:
            noise = torch.randn(batch, self.config.chunk_size, self.config.max_action_dim, device=device)
        if plain:
            labels = [Label.NULL]  # a ∅ suffix is the plain one; the plain prefix keeps its prompt (below)
        elif w == 1.0:
            labels = [Label.OPTIMAL]
        elif w == 0.0:
            labels = [Label.NULL]
        else:
            labels = [Label.OPTIMAL, Label.NULL]
        branches = len(labels)
        o = torch.tensor([int(label) for label in labels], device=device).repeat_interleave(batch)

        drop = self._language_drop(o, plain)
        cache, prefix_pad = self._prefix_cache(images, img_masks, lang_tokens, lang_masks, drop, batch, branches)
        state = state.repeat(branches, 1)
        x_t = noise.float()
        dt = -1.0 / num_steps
        time = torch.tensor(1.0, dtype=torch.float32, device=device)
        for _ in range(num_steps):  # time runs 1 -> 0 in float32 steps of dt, as in PI0
            v = self._suffix_velocity(cache, prefix_pad, state, x_t.repeat(branches, 1, 1), time.expand(batch * branches), o)
            if branches == 2:
                v_cond, v_uncond = v.chunk(2, 0)
                v = v_uncond + w * (v_cond - v_uncond)
            x_t = x_t + dt * v
            time = time + dt
        return x_t

    def _prefix_cache(self, images, img_masks, lang_tokens, lang_masks, drop, batch, branches) -> tuple[KVCache, torch.Tensor]:
        """Run the prefix once and share its cache between the branches.

        ``drop`` (batch * branches,) marks the rows whose language is masked out (None: none is).
        Under prefix dropout the unconditional branch's prefix differs (same image tokens, language
        masked out), so both prefixes run, stacked in one batch; the images are encoded once.
        """
        prefix, pad, flags = self.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        per_branch = branches == 2 and drop is not None
        if per_branch:
            prefix, pad, flags = prefix.repeat(2, 1, 1), pad.repeat(2, 1), flags.repeat(2, 1)
        if drop is not None:
            drop, language = (drop if per_branch else drop[:batch]), lang_tokens.shape[1]
            pad = torch.cat([pad[:, :-language], pad[:, -language:] & ~drop[:, None]], 1)
        mask = make_attention_mask(pad, flags)
        _, cache = self.transformer(prefix, None, mask, torch.cumsum(pad.long(), 1) - 1, build_cache=True)
        if branches == 2 and not per_branch:
            cache = [(k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1)) for k, v in cache]
            pad = pad.repeat(2, 1)
        return cache, pad

    def _suffix_velocity(self, cache, prefix_pad, state, x_t, time, o):
        suffix, suffix_pad, suffix_flags = self.embed_suffix(state, x_t, time, o)
        batch, length = suffix_pad.shape
        to_prefix = prefix_pad[:, None, :].expand(batch, length, prefix_pad.shape[1])
        mask = torch.cat([to_prefix, make_attention_mask(suffix_pad, suffix_flags)], 2)
        positions = prefix_pad.sum(1, keepdim=True) + torch.cumsum(suffix_pad.long(), 1) - 1
        out, _ = self.transformer(None, suffix.to(cache[0][0].dtype), mask, positions, cache=cache)
        return self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)).float()


def validate_cfg_scale(cfg_scale: float) -> float:
    w = float(cfg_scale)
    if not math.isfinite(w) or w < 0:
        raise CfgrlError(f"cfg_scale must be a finite number >= 0 (1 = conditional only, 0 = unconditional only), got {cfg_scale}")
    return w
