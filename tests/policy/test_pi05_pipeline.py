"""Every stage takes π0.5: the built-in pipeline end to end with the small π0.5 preset (collect with a
fresh policy -> label -> train -> evaluate -> export), in-process on the smallest settings. Numbers are
not asserted (two training steps learn nothing); the artefacts and the family they carry are."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.policy import PI05Model, PI0Policy

SMALL = {
    "env": {"name": "builtin", "suite": "reach", "image_size": 32, "tasks": [0, 1], "init_states": [0, 1, 2], "max_steps": 20},
    "policy": {"preset": "pi05_tiny", "condition_mode": "bias"},
    "collect": {"groups": 2, "group_size": 2, "workers": 1},
    # label every window o=1 (as tests/test_pipeline.py does) so training has conditioned labels
    "cfgrl": {"label_source": "window_return", "label_threshold": 0.0, "zero_variance_groups": "keep", "use_prefix_dropout": True},
    "train": {"steps": 2, "batch_size": 4, "lr": 1.0e-3, "warmup_steps": 1, "decay_steps": 2, "save_every": 2, "log_every": 1},
    "evaluate": {"cfg_scales": [0.0, 2.0], "init_states": [3], "episodes_per_init": 1},
}
pytestmark = pytest.mark.slow


def run(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


def test_builtin_pipeline_end_to_end_with_the_small_pi05_preset(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    store, run_dir = tmp_path / "s.zarr", tmp_path / "run"
    run("collect", store, "-c", config)
    run("label", store, "-c", config)
    assert "fresh 'pi05_tiny' policy" in run("train", store, "--labels", store, "--out", run_dir, "-c", config)
    policy = PI0Policy.from_pretrained(run_dir / "policy")
    assert isinstance(policy.model, PI05Model) and policy.config.discrete_state_input and policy.condition_trained
    run("evaluate", run_dir / "policy", "--out", tmp_path / "eval", "-c", config)
    table = pd.read_csv(tmp_path / "eval" / "results.csv")
    assert {"w=0", "w=2"} <= set(table.arm)
    run("export", run_dir / "policy", tmp_path / "lerobot", "--lerobot")
    assert json.loads((tmp_path / "lerobot" / "config.json").read_text())["type"] == "pi05"


def test_pi05_fine_tunes_with_every_objective_and_runs_a_round(tmp_path):
    """From a π0.5 BC base (`cfgrl base`): the baselines' objectives, and `cfgrl round` (collect,
    label, train, evaluate at each w, choose w on validation), which `ablate` and `demo` chain the same way."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "evaluate": {**SMALL["evaluate"], "validation_init_states": [4]}}))
    store = tmp_path / "s.zarr"
    run("base", tmp_path / "b", "--demo-episodes", "4", "--base-steps", "2", "-c", config)
    base = tmp_path / "b" / "base" / "policy"
    assert isinstance(PI0Policy.from_pretrained(base).model, PI05Model)
    run("collect", store, "--policy", base, "-c", config)
    run("label", store, "-c", config)
    for objective in ("filtered_bc", "weighted"):
        out = tmp_path / objective
        run("train", store, "--labels", store, "--policy", base, "--objective", objective, "--out", out, "-c", config)
        assert isinstance(PI0Policy.from_pretrained(out / "policy").model, PI05Model)
    run("round", tmp_path / "rounds", "--policy", base, "-c", config)
    record = json.loads((tmp_path / "rounds" / "round_001" / "round.json").read_text())
    assert record["chosen_cfg_scale"] in (0.0, 2.0)
    assert isinstance(PI0Policy.from_pretrained(record["policy_out"]).model, PI05Model)
