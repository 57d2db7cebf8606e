"""The files of a policy checkpoint directory, whatever its layout: ``.safetensors`` read safely (a
pickle is refused, never loaded; NaN or inf weights are refused), tensors made contiguous on the CPU
for writing, and a directory written whole (a sibling temporary directory renamed into place)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open

from cfgrl.errors import CfgrlError

PICKLE_HEADS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle stream


def write_atomically(target: Path, fill) -> Path:
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


def contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}
