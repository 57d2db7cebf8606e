"""What PI0 and π0.5 share at the tensor level: flow matching, CFGRL labels, guided cached sampling.

Inputs are already model-ready (``ModelInputs``): images (B, 3, S, S) in [-1, 1] per camera with (B,)
masks, language token ids and masks, the state padded to ``max_state_dim`` and normalised (PI0 only;
π0.5 reads it from the prompt or not at all), and which language tokens are the task text (what
prefix dropout drops; None: the whole prompt). Actions are padded to ``max_action_dim`` and
normalised. Flow matching follows PI0: time t=1 is pure noise, t=0 the data.

A family (model_pi0.py, model_pi05.py) builds its layers and says how the suffix is embedded
(``embed_suffix``); everything else lives here. Every forward is either conditioned, with one
``Label`` per sample (``o``), or the plain base model (``plain=True``: no condition machinery, every
prompt kept). The two differ only under prefix dropout, where a ∅ sample also loses its task text;
without it, ∅ is bit for bit the plain model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy.backbone import JointTransformer, KVCache, make_attention_mask
from cfgrl.policy.condition import check_labels
from cfgrl.policy.config import PI0Config


class ModelInputs(NamedTuple):
    images: list[torch.Tensor]
    img_masks: list[torch.Tensor]
    lang_tokens: torch.Tensor
    lang_masks: torch.Tensor
    state: torch.Tensor | None  # (B, max_state_dim) for PI0; None for π0.5
    task_masks: torch.Tensor | None = None  # (B, L) the task text's tokens; None: prefix dropout drops every token
    # text condition mode, sampling only: the o = 1 prompts' (ids, mask, task mask), while lang_* hold the
    # ∅ (plain) prompts; in training lang_* already hold each sample's labelled prompt
    optimal_language: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None


class Suffix(NamedTuple):
    tokens: torch.Tensor  # (B, S, expert_width)
    pad: torch.Tensor  # (B, S) bool
    flags: torch.Tensor  # (B, S) bool: True opens a new attention block
    expert_cond: torch.Tensor | None  # (B, expert_width) conditioning of the expert's adaptive norms (π0.5)


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


def validate_cfg_scale(cfg_scale: float) -> float:
    w = float(cfg_scale)
    if not math.isfinite(w) or w < 0:
        raise CfgrlError(f"cfg_scale must be a finite number >= 0 (1 = conditional only, 0 = unconditional only), got {cfg_scale}")
    return w


class FlowModel(nn.Module):
    """The shared base: the config and the joint transformer. A family defines ``action_in_proj``,
    ``action_out_proj``, ``condition`` and ``embed_suffix(state, x_t, time, o) -> Suffix``."""

    def __init__(self, cfg: PI0Config) -> None:
        super().__init__()
        self.config = cfg
        self.transformer = JointTransformer(cfg)

    def embed_suffix(self, state, x_t, time, o) -> Suffix:
        raise NotImplementedError

    # ----- token sequences -------------------------------------------------------------------------
    def embed_prefix(self, inputs: ModelInputs, drop_language=None):
        """Image tokens of every camera, then language tokens; all in one bidirectional block.

        ``drop_language`` (B,) bool marks samples whose task text becomes padding (prefix dropout). The
        language may hold k prompts per image row (guided sampling's branches, stacked branch-major):
        the images are encoded once and repeated k times.
        """
        batch, cameras = inputs.lang_tokens.shape[0], len(inputs.images)
        repeats = batch // inputs.images[0].shape[0]
        image_tokens = self.transformer.embed_images(torch.cat(list(inputs.images), 0)).chunk(cameras, 0)
        image_tokens = [tokens.repeat(repeats, 1, 1) for tokens in image_tokens]
        img_masks = [mask.repeat(repeats) for mask in inputs.img_masks]
        per_image = image_tokens[0].shape[1]
        language = self.transformer.embed_language(inputs.lang_tokens).to(image_tokens[0].dtype)
        lang_masks = inputs.lang_masks.bool()
        if drop_language is not None:
            lang_masks = self._drop_task(lang_masks, inputs.task_masks, drop_language)
        embeddings = torch.cat([*image_tokens, language], 1)
        pad = torch.cat([*(m[:, None].expand(batch, per_image) for m in img_masks), lang_masks], 1)
        return embeddings, pad, torch.zeros_like(pad)

    @staticmethod
    def _drop_task(lang_masks: torch.Tensor, task_masks: torch.Tensor | None, drop: torch.Tensor) -> torch.Tensor:
        """The language mask with the task text of the ``drop`` rows masked out (their whole prompt when
        no task mask is given: PI0's prompt is the task). π0.5 keeps its state text."""
        droppable = task_masks.bool() if task_masks is not None else torch.ones_like(lang_masks)
        return lang_masks & ~(droppable & drop[:, None])

    @staticmethod
    def _labels(o: torch.Tensor | None, plain: bool, batch: int, device) -> torch.Tensor:
        """The labels of one forward: ``o`` checked, or for the plain model (which takes none) all ∅."""
        if not plain:
            return check_labels(o, batch)
        if o is not None:
            raise CfgrlError("plain=True is the base model without condition machinery and takes no labels o; pass labels or plain=True, not both")
        return torch.full((batch,), int(Label.NULL), dtype=torch.long, device=device)

    def _language_drop(self, o: torch.Tensor, plain: bool) -> torch.Tensor | None:
        """(B,) rows whose task text becomes padding: the ∅ rows under prefix dropout; none for the plain model."""
        return o == Label.NULL if self.config.use_prefix_dropout and not plain else None

    def _actions_out(self, out: torch.Tensor) -> torch.Tensor:
        return self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)).float()

    # ----- training --------------------------------------------------------------------------------
    def velocity(self, inputs: ModelInputs, x_t, time, o=None, plain=False):
        """v(x_t, t | o) from one joint forward of prefix and suffix (no cache); ``plain=True`` instead of o
        is the base model."""
        batch, device = x_t.shape[0], x_t.device
        o = self._labels(o, plain, batch, device)
        prefix, prefix_pad, prefix_flags = self.embed_prefix(inputs, self._language_drop(o, plain))
        suffix = self.embed_suffix(inputs.state, x_t, time, o)
        pad = torch.cat([prefix_pad, suffix.pad], 1)
        mask = make_attention_mask(pad, torch.cat([prefix_flags, suffix.flags], 1))
        positions = torch.cumsum(pad.long(), 1) - 1
        out, _ = self.transformer(prefix, suffix.tokens.to(prefix.dtype), mask, positions, expert_cond=suffix.expert_cond)
        return self._actions_out(out)

    def forward(self, inputs: ModelInputs, actions, noise=None, time=None, o=None, plain=False):
        """Element-wise flow-matching losses (B, chunk, max_action_dim): x_t = t eps + (1-t) a, target eps - a.

        Each sample under its label ``o`` (required), or every sample the base model with ``plain=True``."""
        batch = actions.shape[0]
        noise = torch.randn_like(actions) if noise is None else noise
        time = flow_time(torch.rand(batch)).to(actions.device) if time is None else time
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        v_t = self.velocity(inputs, x_t, time, o, plain)
        return F.mse_loss(target.float(), v_t, reduction="none")

    # ----- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(self, inputs: ModelInputs, noise=None, cfg_scale=1.0, plain=False, num_steps=None):
        """Euler integration from t=1 (noise) to t=0 with the guided velocity v_null + w (v_1 - v_null).

        w=1 runs the conditional branch only, w=0 the unconditional only; any other w runs both in ONE
        batched suffix pass per step over the shared prefix cache (two prefixes under prefix dropout).
        ``plain=True`` is the base model whatever w: no condition machinery, the prompt always kept.
        """
        w = validate_cfg_scale(cfg_scale)
        batch, device = inputs.lang_tokens.shape[0], inputs.lang_tokens.device
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

        cache, prefix_pad = self._prefix_cache(self._branch_language(inputs, labels), self._language_drop(o, plain), batch, branches)
        state = inputs.state.repeat(branches, 1) if inputs.state is not None else None
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

    def _branch_language(self, inputs: ModelInputs, labels: list[Label]) -> ModelInputs:
        """``inputs`` with the prompts of each branch's label stacked branch-major, in text condition mode
        (the label is in the prompt: o = 1 reads ``optimal_language``, ∅ the plain prompt); else unchanged."""
        if self.config.condition_mode != "text":
            return inputs
        if Label.OPTIMAL in labels and inputs.optimal_language is None:
            raise CfgrlError("text condition mode samples o = 1 from its own prompts: ModelInputs.optimal_language is required")
        plain = (inputs.lang_tokens, inputs.lang_masks, inputs.task_masks)
        parts = [inputs.optimal_language if label == Label.OPTIMAL else plain for label in labels]
        tokens, masks, tasks = (torch.cat(column, 0) if column[0] is not None else None for column in zip(*parts))
        return inputs._replace(lang_tokens=tokens, lang_masks=masks, task_masks=tasks, optimal_language=None)

    def _prefix_cache(self, inputs: ModelInputs, drop, batch, branches) -> tuple[KVCache, torch.Tensor]:
        """Run the prefix once and share its cache between the branches.

        ``drop`` (batch * branches,) marks the rows whose task text is masked out (None: none is).
        The branches' prefixes differ under prefix dropout (the unconditional one's task text masked
        out) and in text condition mode (``inputs`` then holds one prompt per branch, from
        ``_branch_language``): both prefixes then run, stacked in one batch; the images are encoded once.
        """
        per_branch = branches == 2 and (drop is not None or self.config.condition_mode == "text")
        if per_branch and inputs.lang_tokens.shape[0] == batch:
            rows = lambda x: x.repeat(2, 1) if x is not None else None  # noqa: E731  prefix dropout: one prompt, twice
            inputs = inputs._replace(lang_tokens=rows(inputs.lang_tokens), lang_masks=rows(inputs.lang_masks), task_masks=rows(inputs.task_masks))
        if drop is not None and not per_branch:
            drop = drop[:batch]
        prefix, pad, flags = self.embed_prefix(inputs, drop)
        mask = make_attention_mask(pad, flags)
        _, cache = self.transformer(prefix, None, mask, torch.cumsum(pad.long(), 1) - 1, build_cache=True)
        if branches == 2 and not per_branch:
            cache = [(k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1)) for k, v in cache]
            pad = pad.repeat(2, 1)
        return cache, pad

    def _suffix_velocity(self, cache, prefix_pad, state, x_t, time, o):
        suffix = self.embed_suffix(state, x_t, time, o)
        batch, length = suffix.pad.shape
        to_prefix = prefix_pad[:, None, :].expand(batch, length, prefix_pad.shape[1])
        mask = torch.cat([to_prefix, make_attention_mask(suffix.pad, suffix.flags)], 2)
        positions = prefix_pad.sum(1, keepdim=True) + torch.cumsum(suffix.pad.long(), 1) - 1
        out, _ = self.transformer(None, suffix.tokens.to(cache[0][0].dtype), mask, positions, cache=cache, expert_cond=suffix.expert_cond)
        return self._actions_out(out)


def build_model(cfg: PI0Config) -> FlowModel:
    """The model of ``cfg.family``."""
    if cfg.family == "pi05":
        from cfgrl.policy.model_pi05 import PI05Model

        return PI05Model(cfg)
    from cfgrl.policy.model_pi0 import PI0Model

    return PI0Model(cfg)
