"""lerobot's stats files: the processors' files whatever their step index, mean/std or q01/q99 as
config.json's normalization_mapping says, conflicting files refused; quantile stats exported and read back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cfgrl.errors import CfgrlError
from cfgrl.policy import NormStats, PI0Policy
from cfgrl.policy.checkpoint import export_lerobot
from policy_helpers import make_config
from test_lerobot_fixture import FIXTURE, sizes

PRE, POST = "policy_preprocessor_step_3_normalizer_processor", "policy_postprocessor_step_0_unnormalizer_processor"


def fixture_copy(tmp_path, pre_step: int = 3, post_step: int = 0):
    out = tmp_path / "lerobot"
    out.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURE / name, out / name)
    shutil.copy(FIXTURE / f"{PRE}.safetensors", out / f"policy_preprocessor_step_{pre_step}_normalizer_processor.safetensors")
    shutil.copy(FIXTURE / f"{POST}.safetensors", out / f"policy_postprocessor_step_{post_step}_unnormalizer_processor.safetensors")
    return out


def _sizes():
    return sizes(json.loads((FIXTURE / "arch.json").read_text()))


def test_processor_stats_are_read_whatever_the_step_index(tmp_path):
    policy = PI0Policy.from_pretrained(fixture_copy(tmp_path, pre_step=7, post_step=12), **_sizes())
    expected = load_file(str(FIXTURE / f"{PRE}.safetensors"))
    np.testing.assert_allclose(policy.stats.state_mean, expected["observation.state.mean"].numpy(), rtol=1e-6)
    assert policy.stats.kind == "mean_std"
    assert any("policy_postprocessor_step_12" in n and "policy_preprocessor_step_7" in n for n in policy.load_report)


def test_two_conflicting_stats_files_are_one_clear_error(tmp_path):
    directory = fixture_copy(tmp_path)
    path = directory / f"{POST}.safetensors"
    tensors = load_file(str(path))
    tensors["action.mean"] = tensors["action.mean"] + 1.0
    save_file(tensors, str(path))
    with pytest.raises(CfgrlError, match=r"give different action.mean; keep the stats file"):
        PI0Policy.from_pretrained(directory, **_sizes())


def test_quantile_stats_files_follow_the_normalization_mapping(tmp_path):
    directory = fixture_copy(tmp_path)
    meta = json.loads((directory / "config.json").read_text())
    meta["normalization_mapping"] = {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CfgrlError, match=r"hold no action.q01, action.q99, observation.state.q01, observation.state.q99"):
        PI0Policy.from_pretrained(directory, **_sizes())
    for name in (PRE, POST):
        tensors = load_file(str(directory / f"{name}.safetensors"))
        for feature in ("observation.state", "action"):
            tensors[f"{feature}.q01"] = tensors[f"{feature}.mean"] - 1.0
            tensors[f"{feature}.q99"] = tensors[f"{feature}.mean"] + 3.0
        save_file(tensors, str(directory / f"{name}.safetensors"))
    policy = PI0Policy.from_pretrained(directory, **_sizes())
    assert policy.stats.kind == "quantile"
    np.testing.assert_allclose(policy.stats.affine("action")[1], np.full(7, 2.0))
    meta["normalization_mapping"]["STATE"] = "MEAN_STD"
    (directory / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CfgrlError, match=r"normalises STATE with MEAN_STD and ACTION with QUANTILES; cfgrl reads one kind"):
        PI0Policy.from_pretrained(directory, **_sizes())


def test_quantile_stats_export_and_reload(tmp_path):
    rng = np.random.default_rng(0)
    lo = {"state": rng.normal(size=8), "action": rng.normal(size=7)}
    stats = NormStats(kind="quantile", **{f"{n}_q01": v for n, v in lo.items()}, **{f"{n}_q99": v + 1.5 for n, v in lo.items()})
    torch.manual_seed(0)
    policy = PI0Policy(make_config(), stats=stats)
    out = export_lerobot(policy, tmp_path / "exported")
    assert json.loads((out / "config.json").read_text())["normalization_mapping"]["ACTION"] == "QUANTILES"
    again = PI0Policy.from_pretrained(out)
    assert again.stats.kind == "quantile"
    for field, value in stats.fields().items():  # exported as float32
        np.testing.assert_allclose(getattr(again.stats, field), value, rtol=1e-6)
