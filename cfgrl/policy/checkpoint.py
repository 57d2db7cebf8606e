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

from pathlib import Path
from typing import Any

import torch

from cfgrl.errors import CfgrlError
from cfgrl.policy import layout, lerobot_format, openpi_format
from cfgrl.policy.config import PI0Config
from cfgrl.policy.normalize import NormStats
from cfgrl.policy.policy import content_digest, feed_digest
from cfgrl.schemas import POLICY

# One module per job; this one reads cfgrl's own layout and picks the reader of any layout, and the
# names every importer uses (``from cfgrl.policy.checkpoint import ...``) stay importable from it:
#   checkpoint_files.py  safetensors read safely, a directory written whole (every layout, LoRA, training state)
#   save.py              cfgrl's own layout written
#   materialise.py       a policy from the tensors a reader read
#   lerobot_format.py    lerobot's layout read (and its key and config mapping)
#   openpi_format.py     openpi's layout read, as the lerobot layout it almost is
#   export.py            lerobot's layout written (``cfgrl export``)
from cfgrl.policy.checkpoint_files import read_safetensors
from cfgrl.policy.export import export_lerobot, exported_state
from cfgrl.policy.materialise import materialise, tokenizer_of
from cfgrl.policy.save import STATS_FILE, save_policy, write_policy_files

__all__ = ["CONDITION_SETTINGS", "STATS_FILE", "carries_stats", "export_lerobot", "exported_state", "is_policy_config",
           "load_policy", "read_safetensors", "save_policy", "write_policy_files"]


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
    readers = {"cfgrl": _load_ours, "lerobot": lerobot_format.load_lerobot, "openpi": openpi_format.load_openpi}
    load = readers[layout.known_layout(meta, directory)]
    return load(PI0Policy, directory, meta, tokenizer, overrides or {}, dtype)


def carries_stats(directory: Path) -> bool:
    """Whether a checkpoint (ours, lerobot's or openpi's) carries normalisation stats, read without its weights."""
    meta = layout.read_config(directory)
    kind = layout.known_layout(meta, directory)
    if kind == "cfgrl":
        return (directory / STATS_FILE).is_file()
    if kind == "openpi":
        return bool(openpi_format.norm_stats_files(directory))
    return lerobot_format.read_stats(directory, [], lerobot_format.stats_kind(meta, directory)) is not None


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
    policy, _ = materialise(cls, config, stats, tokenizer_of(config, directory, tokenizer), state, directory, bool(switched))
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
