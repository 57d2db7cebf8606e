"""Policy checkpoints: our directory format, reading lerobot (pi0, pi05) and openpi directories (layout.py), exporting to lerobot.

Our format, one directory:
  config.json        {"schema": "cfgrl.policy", "schema_version": 1 (``schemas.POLICY``), "policy_id",
                      "condition_trained", "config"}; checkpoints written before the stamp have
                      "format": "cfgrl-pi0-policy" instead of "schema", and still load
  model.safetensors  PI0Model weights under our key names
  stats.json         normalisation stats (absent when the policy carries none: PI0Policy.stats is None)
  tokenizer.json | tokenizer.model   the byte tokenizer, or the PaliGemma SentencePiece model
Writes are atomic: a sibling temporary directory is renamed into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy import layout, lerobot_format, openpi_format
from cfgrl.policy.config import PI0Config
from cfgrl.policy.normalize import NormStats
from cfgrl.policy.policy import content_digest, feed_digest
from cfgrl.policy.tokenizer import make_tokenizer
from cfgrl.schemas import POLICY

STATS_FILE = "stats.json"
PICKLE_HEADS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle stream
log = logging.getLogger(__name__)


def _write_atomically(target: Path, fill) -> Path:
    target = Path(target)
    if target.exists() and not (target / "config.json").is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise CfgrlError(f"{target} exists and is not a policy checkpoint; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_safetensors(path: Path, dtype: torch.dtype | None = None,
                     on_read: Callable[[str, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or one line saying it is missing, cut short, or not
    safetensors at all. A pickle is refused, never loaded: unpickling runs arbitrary code.

    Tensors are read one at a time, in key order: ``on_read`` sees each as stored, then a floating
    one is cast to ``dtype`` (None: kept), so reading a full-size model holds one copy in ``dtype``
    plus one tensor as stored, never the whole file twice."""
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            for key in sorted(f.keys()):
                tensor = f.get_tensor(key)
                _require_finite(path, key, tensor)
                if on_read is not None:
                    on_read(key, tensor)
                tensors[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        return tensors
    except PermissionError:
        raise CfgrlError(f"{path} cannot be read: permission denied; give the user running cfgrl read permission "
                         "on it (chmod u+r)") from None
    except (SafetensorError, OSError) as exc:
        if not Path(path).is_file():
            raise CfgrlError(f"{path} is missing; copy the whole checkpoint directory again") from None
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(PICKLE_HEADS):
            raise CfgrlError(f"{path} is a pickle (torch.save) file, not safetensors; cfgrl never unpickles: "
                             "give a checkpoint written by cfgrl or lerobot (safetensors)") from None
        raise CfgrlError(f"{path} is truncated or corrupt ({exc}); copy the checkpoint again, or save it again "
                         "from its source") from None


def _require_finite(path: Path, key: str, tensor: torch.Tensor) -> None:
    """Refuse NaN or inf weights (a diverged run's): they would sample NaN actions, which the envs cannot step."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise CfgrlError(f"{path}: tensor '{key}' holds non-finite values (NaN or inf), so the policy is broken (a "
                         "diverged training run?); use an earlier checkpoint")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_policy_files(policy, directory: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """The checkpoint's files into an existing ``directory``: ``weights`` (default: ``policy.weights()``;
    a sharded run passes the gathered ones) and their id, the config, stats and tokenizer."""
    weights = policy.weights() if weights is None else weights  # with LoRA: merged once, for the file and the id
    save_file(_contiguous(weights), str(directory / "model.safetensors"))
    if policy.stats is not None:
        policy.stats.save(directory / STATS_FILE)
    policy.tokenizer.save(directory)
    meta = {
        **POLICY.stamp(), "policy_id": policy.id_of(weights),
        "condition_trained": policy.condition_trained, "config": policy.config.to_dict(),
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=1))


def save_policy(policy, directory: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    return _write_atomically(directory, lambda staging: write_policy_files(policy, staging, weights))


def is_policy_config(meta: Any) -> bool:
    """Whether a config.json is a policy checkpoint's that ``load_policy`` reads: ours, lerobot's or openpi's."""
    return layout.layout_of(meta) is not None


def _check_schema(meta: dict[str, Any], directory: Path) -> None:
    stamp = {**meta, "schema": POLICY.name} if meta.get("format") == layout.LEGACY_FORMAT else meta
    POLICY.check(stamp, f"policy checkpoint '{directory}'")


def load_policy(directory: Path, tokenizer: str | Path | None = None, overrides: dict[str, Any] | None = None,
                dtype: torch.dtype = torch.float32):
    """The policy a checkpoint holds, its weights in ``dtype``: built on the meta device and given the
    tensors read from the file (cast as they are read), so loading holds about one copy of the weights."""
    from cfgrl.policy.policy import PI0Policy

    meta = layout.read_config(directory)
    load = {"cfgrl": _load_ours, "lerobot": _load_lerobot, "openpi": _load_openpi}[layout.known_layout(meta, directory)]
    return load(PI0Policy, directory, meta, tokenizer, overrides or {}, dtype)


def _materialise(cls, config: PI0Config, stats: NormStats | None, tokenizer, state: dict[str, torch.Tensor], directory: Path,
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


def carries_stats(directory: Path) -> bool:
    """Whether a checkpoint (ours, lerobot's or openpi's) carries normalisation stats, read without its weights."""
    meta = layout.read_config(directory)
    kind = layout.known_layout(meta, directory)
    if kind == "cfgrl":
        return (directory / STATS_FILE).is_file()
    if kind == "openpi":
        return bool(openpi_format.norm_stats_files(directory))
    return lerobot_format.read_stats(directory, [], lerobot_format.stats_kind(meta, directory)) is not None


def _tokenizer(config: PI0Config, directory: Path, path: str | Path | None):
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


CONDITION_SETTINGS = ("condition_mode", "use_prefix_dropout")


def _load_ours(cls, directory: Path, meta: dict, tokenizer, overrides: dict, dtype: torch.dtype):
    _check_schema(meta, directory)
    overrides = {k: v for k, v in overrides.items() if meta["config"].get(k) != v}
    switched = {k: v for k, v in overrides.items() if k in CONDITION_SETTINGS}
    trained = bool(meta.get("condition_trained", False))
    if switched and trained:
        saved = {k: meta["config"].get(k) for k in switched}
        raise CfgrlError(f"{directory}: its condition parameters were trained with {saved}; they cannot be switched to "
                         f"{switched} (start from a policy whose condition was never trained, e.g. the BC base)")
    config = PI0Config.from_dict({**meta["config"], **overrides})
    stats = NormStats.load(directory / STATS_FILE) if (directory / STATS_FILE).is_file() else None
    # The recorded id is checked on the bytes as stored, while they are read (the weights may be cast).
    digest = content_digest(config, trained, stats) if not overrides else None
    cast = []  # whether any floating tensor is held in another dtype than stored

    def on_read(key: str, tensor: torch.Tensor) -> None:
        if tensor.is_floating_point() and tensor.dtype != dtype:
            cast.append(key)
        if digest is not None:
            feed_digest(digest, key, tensor)

    state = read_safetensors(directory / "model.safetensors", dtype, on_read)
    if switched:  # never trained: nothing is lost by starting the new condition machinery afresh
        state = {k: v for k, v in state.items() if not k.startswith("condition.")}
    policy, _ = _materialise(cls, config, stats, _tokenizer(config, directory, tokenizer), state, directory, bool(switched))
    policy.condition_trained = trained
    if switched:
        policy.load_report = [f"condition settings {switched} replace the checkpoint's untrained ones; new condition parameters initialised"]
    if digest is not None:
        if digest.hexdigest() != meta.get("policy_id"):
            raise CfgrlError(f"{directory}: content hash {digest.hexdigest()} differs from the recorded policy id {meta.get('policy_id')} "
                             "(corrupted or edited checkpoint)")
        if not cast:
            policy.remember_id(digest.hexdigest())  # held as stored: the id is the recorded one, no second pass
    return policy


def _load_lerobot(cls, directory: Path, meta: dict, tokenizer, overrides: dict, dtype: torch.dtype):
    notes: list[str] = []
    stats = lerobot_format.read_stats(directory, notes, lerobot_format.stats_kind(meta, directory))
    weights = read_safetensors(directory / "model.safetensors", dtype)
    return _from_lerobot(cls, directory, meta, weights, stats, notes, tokenizer, overrides)


def _load_openpi(cls, directory: Path, meta: dict, tokenizer, overrides: dict, dtype: torch.dtype):
    weights = read_safetensors(directory / "model.safetensors", dtype)
    converted = openpi_format.to_lerobot(directory, meta, weights, overrides.get("state_dim"), overrides.get("action_dim"))
    if converted.family == "pi05" and "discrete_state_input" not in overrides:
        raise CfgrlError(f"{directory} is an openpi π0.5 checkpoint, whose config.json does not record whether the state is "
                         "written into the prompt: give discrete_state_input=True (openpi's default) or False (pi05_libero)")
    return _from_lerobot(cls, directory, converted.meta, converted.weights, converted.stats, converted.notes, tokenizer, overrides)


def _from_lerobot(cls, directory: Path, meta: dict, weights: dict, stats: NormStats | None, notes: list[str], tokenizer,
                  overrides: dict):
    """Our policy from a checkpoint in lerobot's terms: its config.json ``meta``, ``weights`` under lerobot's key names."""
    config = PI0Config.from_dict({**lerobot_format.config_values(meta, directory), **overrides})
    lerobot_format.check_family(config.family, weights, directory)
    state, converted = lerobot_format.to_ours(weights)
    notes += converted
    policy, condition_keys = _materialise(cls, config, stats, _tokenizer(config, directory, tokenizer), state, directory, True)
    if condition_keys:  # text mode has none: its condition is the prompt
        notes.append(f"initialised new condition parameters ({config.condition_mode}): {', '.join(condition_keys)}")
    policy.load_report = notes
    for note in notes:
        log.info("%s: %s", directory, note)
    return policy


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
        save_file(_contiguous(weights), str(staging / "model.safetensors"))
        save_file(_contiguous(stats), str(staging / lerobot_format.STATS_FILE))
        kind = policy.stats.kind if policy.stats is not None else "mean_std"
        (staging / "config.json").write_text(json.dumps(lerobot_format.config_json(policy.config, kind), indent=1))
        (staging / lerobot_format.SIZES_FILE).write_text(json.dumps(lerobot_format.sizes_json(policy.config), indent=1))
        if policy.config.tokenizer == "sentencepiece" and policy.holds_tokenizer:  # one loaded without it exports without it
            policy.tokenizer.save(staging)

    return _write_atomically(directory, fill)
