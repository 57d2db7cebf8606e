"""The ``evaluate`` stage: success against the guidance weight w on paired episodes.

Public API (imported lazily so ``cfgrl --help`` stays fast):
``evaluate_policy(cfg, policy_dir, out_dir, baseline_dir=None, store=None) -> results dict``,
``evaluate_shard(cfg, policy_dir, shard, num_shards, out_dir, ...) -> shard manifest`` (one machine's part),
``merge_shards(dirs, out_dir) -> results dict`` (every shard's part, as ``evaluate_policy`` would give),
``chosen_cfg_scale(results, who) -> float`` (the w chosen on validation init states), ``overall_rows(results, split)``, ``load_results(path) -> results dict``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["chosen_cfg_scale", "evaluate_policy", "evaluate_shard", "load_results", "merge_shards", "overall_rows"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate_policy", "evaluate_shard", "merge_shards"):
        from cfgrl.evaluate import runner

        return getattr(runner, name)
    if name in ("chosen_cfg_scale", "load_results", "overall_rows"):
        from cfgrl.evaluate import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'cfgrl.evaluate' has no attribute {name!r}")
