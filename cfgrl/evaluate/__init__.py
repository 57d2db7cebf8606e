"""The ``evaluate`` stage: success against the guidance weight w on paired episodes.

Public API (imported lazily so ``cfgrl --help`` stays fast):
``evaluate_policy(cfg, policy_dir, out_dir, baseline_dir=None, store=None) -> results dict``,
``chosen_cfg_scale(results, who) -> float`` (the w chosen on validation init states), ``overall_rows(results, split)``, ``load_results(path) -> results dict``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["chosen_cfg_scale", "evaluate_policy", "load_results", "overall_rows"]


def __getattr__(name: str) -> Any:
    if name == "evaluate_policy":
        from cfgrl.evaluate.runner import evaluate_policy

        return evaluate_policy
    if name in ("chosen_cfg_scale", "load_results", "overall_rows"):
        from cfgrl.evaluate import summary

        return getattr(summary, name)
    raise AttributeError(f"module 'cfgrl.evaluate' has no attribute {name!r}")
