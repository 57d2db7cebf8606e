"""`cfgrl curve`: every kept checkpoint of a run evaluated on the validation episodes alone."""

import json

import pytest

from train_helpers import label, run_train, write_store
from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.plan import check_protocol
from cfgrl.pipeline.curve import run_curve

SETTINGS = ["env.image_size=16", "env.tasks=[0]", "env.init_states=[20]", "env.max_steps=5", "inference.num_steps=2",
            "evaluate.validation_init_states=[30, 31]", "evaluate.cfg_scales=[0, 1]", "collect.workers=1"]


def test_curve_evaluates_each_kept_checkpoint_on_validation_only(tmp_path):
    store = write_store(tmp_path / "s.zarr")
    run_train(tmp_path / "run", [store], label([store]), "train.steps=4", "train.save_every=2", "train.keep_every=2")
    table = run_curve(load_config(None, SETTINGS), tmp_path / "run", tmp_path / "curve")
    assert table[["step", "cfg_scale"]].values.tolist() == [[2, 0.0], [4, 0.0], [2, 1.0], [4, 1.0]]
    assert (table.episodes == 2).all()  # 1 task x 2 validation init states, per (step, w)
    for step in (2, 4):
        results = json.loads((tmp_path / "curve" / f"step_{step}" / "results.json").read_text())
        assert {r["split"] for r in results["rows"]} == {"validation"} and results["episodes_per_w"] == 0
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 0 and (tmp_path / "curve" / "curve.csv").is_file()
    with pytest.raises(CfgrlError, match="holds no finished checkpoint"):
        run_curve(load_config(None, SETTINGS), tmp_path / "nothing", tmp_path / "curve2")


def test_validation_only_needs_validation_init_states():
    with pytest.raises(CfgrlError, match="validation_only runs the validation episodes alone, and none are set"):
        check_protocol(load_config(None, ["evaluate.validation_only=true"]))
