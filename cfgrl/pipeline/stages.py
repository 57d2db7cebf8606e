"""The four stages as plain function calls, shared by `cfgrl round`, `cfgrl ablate` and `cfgrl demo`.

Each call is exactly what the matching command does (same functions, same resumability): collect
resumes to its count, label reuses an identical version, train resumes from ``last`` or skips a
finished run, evaluate resumes from its episode log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfgrl.config import Config, with_overrides


def collect(cfg: Config, store: Path, policy: str | Path | None) -> None:
    from cfgrl.collect.run import collect

    collect(cfg, store, None if policy is None else str(policy))


def label(cfg: Config, stores: list[Path], out_dir: Path | None = None, policy: Path | None = None) -> Path:
    """Label ``stores`` with ``cfg.cfgrl`` in windows of the chunk of the policy that ``train`` will
    start from (``policy``, else a fresh ``policy.preset``); returns the version directory."""
    from cfgrl.label import make_label_index
    from cfgrl.policy.layout import policy_chunk_size
    from cfgrl.store import open_stores

    horizon = policy_chunk_size(cfg.policy.chunk_size, policy, cfg.policy.preset)
    index = make_label_index(open_stores(stores), cfg.cfgrl, cfg.inference.replan_steps, out_dir, horizon=horizon)
    print(f"label version {index.version}{' (reused)' if index.reused else ''}: {index.path}")
    return index.path


def train(cfg: Config, stores: list[Path], labels: Path, run_dir: Path, policy: Path | None) -> Path:
    """Train (or resume, or skip when finished) and return the final policy directory."""
    from cfgrl.train.trainer import train as run_training

    final = run_dir / "policy"
    if (final / "config.json").is_file():
        print(f"train: {final} is finished, skipping")
        return final
    cfg = with_overrides(cfg, [f"policy.path={json.dumps(None if policy is None else str(policy))}"])
    return Path(run_training(cfg, stores, str(labels), run_dir, resume=(run_dir / "last").exists()))


def evaluate(cfg: Config, policy: Path, out_dir: Path, baseline: Path | None = None, baseline_cfg_scale: float = 0.0) -> dict[str, Any]:
    from cfgrl.evaluate import evaluate_policy

    return evaluate_policy(cfg, policy, out_dir, baseline_dir=baseline, baseline_cfg_scale=baseline_cfg_scale)

