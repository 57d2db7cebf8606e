"""The real tiny checkpoints and the one full evaluation that the end-to-end tests of several files
compare against (session-scoped: rollouts are the expensive part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfgrl.config import load_config

from eval_helpers import SETTINGS, save_tiny_policy


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return save_tiny_policy(root / "policy", True), save_tiny_policy(root / "base", False)


@pytest.fixture(scope="session")
def evaluated(checkpoints, tmp_path_factory):
    """The unsharded evaluation of the policy with the base as baseline and a store: (results, run dir, store)."""
    from cfgrl.evaluate import evaluate_policy

    policy, base = checkpoints
    root = tmp_path_factory.mktemp("eval")
    cfg = load_config(None, SETTINGS, environ={})
    results = evaluate_policy(cfg, policy, root / "run", baseline_dir=base, store=root / "eval.zarr", progress=False)
    return results, root / "run", root / "eval.zarr"
