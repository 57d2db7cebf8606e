"""``cfgrl evaluate`` on the real LIBERO simulator: one short episode per w, paired across w."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.evaluate import load_results
from cfgrl.store import Store

from eval_helpers import save_tiny_policy

pytestmark = [pytest.mark.libero, pytest.mark.slow]


def test_libero_evaluation_runs_the_same_init_state_and_seed_for_every_w(tmp_path):
    policy = save_tiny_policy(tmp_path / "policy", condition_trained=True)
    run, store = tmp_path / "run", tmp_path / "eval.zarr"
    args = ["evaluate", str(policy), "--out", str(run), "--store", str(store), "--cfg-scales", "0,1",
            "-o", "env.name=libero", "-o", "env.suite=libero_spatial", "-o", "env.image_size=32",
            "-o", "env.max_steps=5", "-o", "env.tasks=[0]", "-o", "env.init_states=[3]", "-o", "collect.workers=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception}"
    assert "no w chosen" in result.output  # custom protocol without validation init states: test rows only

    results = load_results(run)
    overall = {r["arm"]: r for r in results["rows"] if r["scope"] == "overall" and r["split"] == "test"}
    assert list(overall) == ["w=0", "w=1"] and all(r["episodes"] == 1 for r in overall.values())
    ep = Store(store).episodes
    assert sorted(ep.cfg_scale) == [0.0, 1.0]
    assert set(ep.suite) == {"libero_spatial"} and set(ep.init_state_id) == {3} and ep.seed.nunique() == 1
    first_states = [Store(store).episode_steps(i, "state")[0] for i in range(2)]
    np.testing.assert_allclose(first_states[0], first_states[1], atol=1e-6)  # same init state and env seed
