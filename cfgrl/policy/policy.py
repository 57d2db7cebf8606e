"""PI0Policy: raw observations in, raw actions out; CFGRL losses and guided sampling, for PI0 and π0.5.

Wraps the family's model (``PI0Model`` or ``PI05Model``) with everything between the robot and the
tensors: image resizing, the prompt (π0.5's carries the discretised state) and its tokenisation,
state/action normalisation and padding, the per-sample CFGRL labels, and the record of whether the
condition parameters were ever trained (an untrained policy is exactly the base policy whatever
guidance weight it is asked for).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy.condition import check_labels
from cfgrl.policy.config import PI0Config
from cfgrl.policy.images import prepare_images
from cfgrl.policy.model import ModelInputs, build_model, validate_cfg_scale
from cfgrl.policy.normalize import NormStats
from cfgrl.policy.tokenizer import Prompt, Tokenizer, discretize_state, make_tokenizer, pi05_prompt, pi0_prompt


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def dtype_named(name: str, setting: str, auto: bool = False) -> torch.dtype:
    """The torch dtype of a config's dtype name; with ``auto`` (inference) also "auto": bf16 where CUDA
    runs the policy, fp32 on the CPU."""
    if auto and name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in DTYPES:
        raise CfgrlError(f"unknown {setting} {name!r}; accepted: {', '.join([*DTYPES, *(['auto'] if auto else [])])}")
    return DTYPES[name]


def _hashed_config(config: PI0Config) -> dict[str, Any]:
    """The config as hashed: a PI0's without the fields π0.5 added, so the ids of PI0 checkpoints
    written before them still verify."""
    values = config.to_dict()
    if config.family == "pi0":
        for key in ("family", "discrete_state_input"):
            values.pop(key)
    return values


def content_digest(config: PI0Config, condition_trained: bool, stats: NormStats | None) -> "hashlib._Hash":
    """A policy id's hash, fed with everything but the weights (``feed_digest`` adds each, in key order)."""
    digest = hashlib.blake2b(digest_size=10)
    digest.update(json.dumps({"config": _hashed_config(config), "condition_trained": condition_trained}, sort_keys=True).encode())
    # No stats normalise exactly as identity stats do: the same content, the same id.
    stats = stats if stats is not None else NormStats.identity(config.state_dim, config.action_dim)
    digest.update(json.dumps(stats.to_dict(), sort_keys=True).encode())
    return digest


def feed_digest(digest: "hashlib._Hash", name: str, tensor: torch.Tensor) -> None:
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, size - x.shape[-1]))


class PI0Policy(nn.Module):
    def __init__(self, config: PI0Config, stats: NormStats | None = None, tokenizer: Tokenizer | str | Path | None = None) -> None:
        """``tokenizer``: a tokenizer object or, for the pi0 preset, the PaliGemma SentencePiece model path."""
        super().__init__()
        if isinstance(tokenizer, (str, Path)):
            tokenizer = make_tokenizer(config.tokenizer, config.max_token_len, path=tokenizer)
        self.config = config
        self.model = build_model(config)
        self.condition_trained = False
        self._tokenizer = tokenizer
        self.load_report: list[str] = []  # what from_pretrained had to initialise or convert
        self._id_cache: tuple[Any, str] | None = None
        self.set_stats(stats)

    # ----- stats and tokenizer ---------------------------------------------------------------------
    @property
    def stats(self) -> NormStats | None:
        """The normalisation stats, or None when the policy carries none (a fresh policy, a checkpoint
        saved without any): it then normalises with mean 0 and std 1, and collect/evaluate refuse it."""
        return self._stats

    def set_stats(self, stats: NormStats | None) -> None:
        applied = stats if stats is not None else self._identity_stats()
        applied.check_dims(self.config.state_dim, self.config.action_dim)
        self._stats = stats
        # Either kind is an affine map (normalize.NormStats.affine): "mean" is its offset, "std" its scale.
        self._norm = {}
        for name in ("state", "action"):
            offset, scale = applied.affine(name)
            self._norm[f"{name}_mean"] = torch.tensor(offset, dtype=torch.float32)
            self._norm[f"{name}_std"] = torch.tensor(scale, dtype=torch.float32)

    def _identity_stats(self) -> NormStats:
        return NormStats.identity(self.config.state_dim, self.config.action_dim)

    def cast_weights(self, dtype: torch.dtype) -> None:
        """Hold every parameter in ``dtype``; buffers (RoPE frequencies, position ids) keep theirs."""
        for param in self.parameters():
            param.data = param.data.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights are held in (float32, or bfloat16 for bf16 inference and training)."""
        return self.model.action_out_proj.weight.dtype

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(self.config.tokenizer, self.config.max_token_len)
        return self._tokenizer

    @property
    def holds_tokenizer(self) -> bool:
        """False for a pi0/pi05-preset policy loaded without its SentencePiece model (it fails when prompted)."""
        return self._tokenizer is not None or self.config.tokenizer == "byte"

    @property
    def device(self) -> torch.device:
        return self.model.action_out_proj.weight.device

    def _norm_on(self, name: str) -> torch.Tensor:
        return self._norm[name].to(self.device)

    # ----- inputs ----------------------------------------------------------------------------------
    def _model_inputs(self, obs: dict[str, Any], labels: torch.Tensor | None = None, optimal_too: bool = False) -> ModelInputs:
        """The model's inputs. Text condition mode only: ``labels`` (B,) write each sample's label into its
        prompt (None: the plain prompts, which are ∅'s); ``optimal_too`` adds the o = 1 prompts as
        ``optimal_language`` (guided sampling's conditional branch)."""
        missing = [k for k in ("images", "state", "prompt") if k not in obs]
        if missing:
            raise CfgrlError(f"observation lacks {', '.join(missing)}; expected images, state and prompt")
        state = torch.as_tensor(obs["state"], dtype=torch.float32, device=self.device)
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise CfgrlError(f"state must have shape (B, {self.config.state_dim}), got {tuple(state.shape)}")
        batch = state.shape[0]
        tasks = [obs["prompt"]] * batch if isinstance(obs["prompt"], str) else list(obs["prompt"])
        if len(tasks) != batch:
            raise CfgrlError(f"got {len(tasks)} prompts for a batch of {batch}")
        images, img_masks = prepare_images(obs["images"], self.config.camera_names, self.config.image_size, batch, self.device)
        state = (state - self._norm_on("state_mean")) / self._norm_on("state_std")
        optimal = self._language(tasks, state, torch.full((batch,), int(Label.OPTIMAL))) if optimal_too else None
        tokens, masks, task_masks = self._language(tasks, state, labels)
        state = None if self.config.family == "pi05" else _pad_last(state, self.config.max_state_dim)  # π0.5: text in the prompt (or unseen)
        return ModelInputs(images, img_masks, tokens, masks, state, task_masks, optimal)

    def _language(self, tasks: list[str], state: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Token ids, attention mask and task mask of the prompts; the task mask only for π0.5, whose
        prefix dropout drops the task text only (PI0's prompt is its task: all of it is dropped)."""
        tokens, masks, task = self.tokenizer(self._prompts(tasks, state, labels))
        return tokens.to(self.device), masks.to(self.device), task.to(self.device) if self.config.family == "pi05" else None

    def _prompts(self, tasks: list[str], state: torch.Tensor, labels: torch.Tensor | None = None) -> list[Prompt]:
        """The family's prompt per sample; ``state`` normalised (π0.5 writes it into the prompt as 256 bins);
        ``labels`` (text condition mode) each sample's label, written as its advantage line."""
        per_sample = labels.tolist() if labels is not None else [None] * len(tasks)
        if self.config.family == "pi0":
            return [pi0_prompt(task, label) for task, label in zip(tasks, per_sample)]
        if not self.config.discrete_state_input:
            return [pi05_prompt(task, None, label) for task, label in zip(tasks, per_sample)]
        bins = discretize_state(state.cpu().numpy())
        return [pi05_prompt(task, row, label) for task, row, label in zip(tasks, bins, per_sample)]

    def require_distinct_prompts(self, tasks: list[str]) -> None:
        """Refuse tasks that the tokenizer's cut to ``max_token_len`` gives the same prompt tokens (on
        MT50 with the tiny preset's 32 bytes, pick-place and pick-place-wall): the policy could not tell
        them apart, and every result on them would mix the two."""
        distinct = sorted(set(tasks))
        if len(distinct) < 2 or not self.holds_tokenizer:  # without its tokenizer it fails, clearly, when prompted
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cut itself is warned about where a prompt is used
            tokens, masks, _ = self.tokenizer(self._prompts(distinct, torch.zeros(len(distinct), self.config.state_dim)))
        seen: dict[tuple[int, ...], str] = {}
        for task, row, mask in zip(distinct, tokens.tolist(), masks.tolist()):
            key = tuple(t for t, keep in zip(row, mask) if keep)
            if key in seen:
                raise CfgrlError(f"tasks {seen[key]!r} and {task!r} have the same prompt once cut to the policy's max_token_len "
                                 f"{self.config.max_token_len}; the policy cannot tell them apart: give a fresh policy, or train one, "
                                 "with a larger policy.max_token_len (e.g. -o policy.max_token_len=64), or choose other tasks")
            seen[key] = task

    def _text_labels(self, o: Any, batch: int) -> torch.Tensor | None:
        """The labels a text-mode prompt carries (checked); None in the other modes, whose prompts carry none."""
        if self.config.condition_mode != "text" or o is None:
            return None
        return check_labels(torch.as_tensor(o), batch)

    # ----- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any], noise: torch.Tensor | None = None, time: torch.Tensor | None = None,
                     plain: bool = False) -> torch.Tensor:
        """Per-sample flow-matching loss (B,): MSE over the chunk's real action dims, padded steps masked,
        each sample under its own label ``batch["o"]`` (required), or the base policy with ``plain=True``
        (the batch then has no "o"). Under prefix dropout the two differ: a ∅ label drops the task text,
        plain keeps it."""
        o = batch.get("o")
        inputs = self._model_inputs(batch, self._text_labels(o, len(batch["actions"])))  # text mode: one forward, each prompt its label
        actions = torch.as_tensor(batch["actions"], dtype=torch.float32, device=self.device)
        expected = (inputs.lang_tokens.shape[0], self.config.chunk_size, self.config.action_dim)
        if tuple(actions.shape) != expected:
            raise CfgrlError(f"actions must have shape {expected}, got {tuple(actions.shape)}")
        actions = _pad_last((actions - self._norm_on("action_mean")) / self._norm_on("action_std"), self.config.max_action_dim)
        o = torch.as_tensor(o, device=self.device) if o is not None else None
        losses = self.model(inputs, actions, noise=noise, time=time, o=o, plain=plain)
        # Like lerobot 0.6.1's PI0Policy: only the real action dims count (the zero padding up to
        # max_action_dim would otherwise dominate the loss of a 7-d robot), padded steps are zeroed.
        losses = losses[:, :, : self.config.action_dim]
        is_pad = batch.get("action_is_pad")
        if is_pad is not None:
            losses = losses * (~torch.as_tensor(is_pad, device=self.device).bool())[:, :, None]
        return losses.mean(dim=(1, 2))

    def forward(self, batch: dict[str, Any], noise: torch.Tensor | None = None, time: torch.Tensor | None = None,
                plain: bool = False) -> torch.Tensor:
        return self.compute_loss(batch, noise=noise, time=time, plain=plain)

    def configure_training(self, freeze_vision: bool = False, train_expert_only: bool = False, gradient_checkpointing: bool = False) -> list[nn.Parameter]:
        """Set requires_grad for the chosen regime and return the trainable parameters.

        train_expert_only trains the action expert, the state/action projections and the condition
        parameters (vision tower and prefix LM frozen); freeze_vision freezes the vision tower only.
        """
        transformer = self.model.transformer
        frozen: set[int] = set()
        if freeze_vision or train_expert_only:
            frozen |= {id(p) for p in transformer.vision.parameters()}
        if train_expert_only:
            frozen |= {id(p) for p in [*transformer.projector.parameters(), *transformer.prefix_lm.parameters()]}
        for p in self.parameters():
            p.requires_grad_(id(p) not in frozen)
        transformer.gradient_checkpointing = gradient_checkpointing
        return [p for p in self.parameters() if p.requires_grad]

    # ----- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], cfg_scale: float = 1.0, noise: torch.Tensor | None = None, num_steps: int | None = None) -> torch.Tensor:
        """Raw actions (B, chunk, action_dim) with guidance v = v_∅ + w (v_1 - v_∅), w = cfg_scale; a policy
        whose condition was never trained samples the plain base PI0 whatever w."""
        validate_cfg_scale(cfg_scale)
        # text mode's conditional branch reads the o = 1 prompts (a trained condition, w > 0)
        inputs = self._model_inputs(obs, optimal_too=self.config.condition_mode == "text" and self.condition_trained and cfg_scale != 0)
        shape = (inputs.lang_tokens.shape[0], self.config.chunk_size, self.config.max_action_dim)
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
            if tuple(noise.shape) != shape:
                raise CfgrlError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        actions = self.model.sample_actions(
            inputs, noise=noise, cfg_scale=cfg_scale, plain=not self.condition_trained, num_steps=num_steps,
        )
        actions = actions[:, :, : self.config.action_dim]
        return actions * self._norm_on("action_std") + self._norm_on("action_mean")

    # ----- identity and checkpoints ----------------------------------------------------------------
    @property
    def policy_id(self) -> str:
        """Content hash of config, weights, stats and condition_trained (cached per weight version).

        The tokenizer is left out: the byte one is fixed by the config, and the PaliGemma SentencePiece
        model is an external asset that may be supplied by path at load time. The weights hashed are the
        ones the policy holds, in their dtype, with LoRA adapters merged (``weights``).
        """
        if self._id_cache is None or self._id_cache[0] != self._id_key():
            self.remember_id(self.id_of(self.weights()))
        return self._id_cache[1]

    def id_of(self, weights: dict[str, torch.Tensor]) -> str:
        """The policy id this policy has when it holds ``weights`` (its ``weights()``, computed once by a caller that needs both)."""
        digest = content_digest(self.config, self.condition_trained, self._stats)
        for name, tensor in sorted(weights.items()):
            feed_digest(digest, name, tensor)
        return digest.hexdigest()

    def _id_key(self) -> tuple:
        return (tuple(t._version for t in self.model.state_dict().values()), id(self._stats), self.condition_trained)

    def remember_id(self, policy_id: str) -> None:
        """Take ``policy_id`` as the hash of the weights held now (verified by the loader as it read them)."""
        self._id_cache = (self._id_key(), policy_id)

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's plain state dict: what a checkpoint stores, with LoRA adapters merged into their layers."""
        from cfgrl.policy.lora import merged_state

        return merged_state(self.model)

    def save_pretrained(self, directory: str | Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the checkpoint atomically; ``weights`` replaces ``self.weights()`` (EMA or gathered FSDP weights)."""
        from cfgrl.policy.checkpoint import save_policy

        return save_policy(self, Path(directory), weights)

    def rename_cameras(self, renames: dict[str, str]) -> None:
        """Let the checkpoint's cameras read the env's (``renames``: checkpoint camera -> env camera);
        the weights are untouched, a camera is only the key its images come under."""
        unknown = sorted(set(renames) - set(self.config.camera_names))
        if unknown:
            raise CfgrlError(f"policy.camera_map names {', '.join(unknown)}, which the checkpoint lacks; its cameras are "
                             f"{', '.join(self.config.camera_names)}")
        names = tuple(renames.get(c, c) for c in self.config.camera_names)
        if len(set(names)) != len(names):
            raise CfgrlError(f"policy.camera_map gives the checkpoint's cameras {', '.join(self.config.camera_names)} "
                             f"the names {', '.join(names)}, one twice; map each to its own camera")
        self.config = self.config.replace(camera_names=names)

    @classmethod
    def from_pretrained(cls, directory: str | Path, tokenizer: str | Path | None = None, dtype: torch.dtype = torch.float32,
                        **overrides: Any) -> "PI0Policy":
        """Load our checkpoint or a lerobot pi0 / pi05 or openpi one (the family the checkpoint holds) with its
        weights in ``dtype``; ``overrides`` are PI0Config fields (e.g. sizes, condition_mode)."""
        from cfgrl.policy.checkpoint import load_policy

        return load_policy(Path(directory), tokenizer=tokenizer, overrides=overrides, dtype=dtype)

