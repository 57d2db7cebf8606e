"""openpi PyTorch checkpoints, as openpi's convert_jax_model_to_pytorch.py writes them, built at test time
from the lerobot fixtures (tests/fixtures/lerobot_pi0, lerobot_pi05): the same weights without lerobot's
``model.`` prefix and with only the surviving name of the tied embedding pair, openpi's five-key
config.json and assets/<asset_id>/norm_stats.json. Loaded through PI0Policy.from_pretrained, each
reproduces its fixture's lerobot outputs; the family is told by the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cfgrl.errors import CfgrlError
from cfgrl.policy import ModelInputs, PI05Model, PI0Policy
from cfgrl.policy import openpi_format
from cfgrl.policy.checkpoint import carries_stats
from policy_helpers import fixture_sizes as sizes, max_relative_error
import test_lerobot_pi05_fixture as pi05_fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "lerobot_pi0"

EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
CONFIG = {"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
          "precision": "float32"}


def norm_stats(pad_to: int | None = None, quantiles: bool = False, family: str = "pi0") -> dict:
    """openpi's norm_stats.json of the ``family`` fixture's dataset stats (quantiles: mean -/+ 2 std)."""
    arch = json.loads((FIXTURES / f"lerobot_{family}" / "arch.json").read_text())
    out = {}
    for ours, theirs in (("state", "observation.state"), ("actions", "action")):
        entry = {k: list(v) for k, v in arch["dataset_stats"][theirs].items()}
        entry["q01"] = [m - 2 * s for m, s in zip(entry["mean"], entry["std"])] if quantiles else None
        entry["q99"] = [m + 2 * s for m, s in zip(entry["mean"], entry["std"])] if quantiles else None
        if pad_to is not None:  # an older openpi padded the stats to the model width with zeros
            entry = {k: None if v is None else v + [0.0] * (pad_to - len(v)) for k, v in entry.items()}
        out[ours] = entry
    return {"norm_stats": out}


def openpi_dir(root: Path, name: str = "ckpt", family: str = "pi0", stats: dict | None = None, assets: bool = True,
               horizon: int = 50) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    source = FIXTURES / f"lerobot_{family}" / "model.safetensors"
    weights = {k[len("model."):]: v for k, v in load_file(str(source)).items() if k.startswith("model.")}
    del weights[EMBED]  # safetensors' save_model keeps lm_head of the tied pair
    del weights["paligemma_with_expert.gemma_expert.lm_head.weight"]
    save_file(weights, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**CONFIG, "action_horizon": horizon}))
    if assets:
        (directory / "assets").mkdir()
        if stats is not None:
            (directory / "assets" / "physical-intelligence" / "libero").mkdir(parents=True)
            (directory / "assets" / "physical-intelligence" / "libero" / "norm_stats.json").write_text(json.dumps(stats))
    return directory


@pytest.fixture(scope="module")
def arch():
    return json.loads((FIXTURE / "arch.json").read_text())


def test_openpi_pi0_reproduces_the_lerobot_fixture(tmp_path, arch):
    # named like a π0.5 on purpose: the family comes from the weights, never from the name
    directory = openpi_dir(tmp_path, name="pi05_libero_pytorch", stats=norm_stats(pad_to=32))
    assert carries_stats(directory)
    policy = PI0Policy.from_pretrained(directory, **sizes(arch)).eval()
    assert policy.config.camera_names == openpi_format.CAMERAS and policy.config.chunk_size == 50
    assert (policy.config.state_dim, policy.config.action_dim) == (8, 7)  # the zero padding of the stats is not the robot's
    assert policy.stats.kind == "mean_std"
    np.testing.assert_allclose(policy.stats.action_std, arch["dataset_stats"]["action"]["std"], rtol=1e-6)
    assert any("openpi π0 checkpoint" in n for n in policy.load_report)
    assert any("tied lm_head" in n for n in policy.load_report)
    io = load_file(str(FIXTURE / "io.safetensors"))
    cameras = sorted(k for k in io if k.startswith("image_") and "mask" not in k)
    inputs = ModelInputs([io[c] for c in cameras], [io[c.replace("image_", "image_mask_")] for c in cameras], io["lang_tokens"],
                         io["lang_masks"], io["state"])
    with torch.no_grad():
        losses = policy.model(inputs, io["actions"], noise=io["noise"], time=io["time"], plain=True)
        velocity = policy.model.velocity(inputs, io["x_t"], io["time"], plain=True)
        sampled = policy.model.sample_actions(inputs, noise=io["sample_noise"], plain=True)
    assert max_relative_error(losses, io["losses"]) <= 1e-4
    assert max_relative_error(velocity, io["velocity"]) <= 1e-4
    assert max_relative_error(sampled, io["sampled_actions"]) <= 1e-4


def test_openpi_pi05_is_told_by_its_weights_and_reproduces_the_lerobot_pi05_fixture(tmp_path):
    # named like a π0 on purpose: the family comes from the weights, never from the name
    directory = openpi_dir(tmp_path, name="pi0_base", family="pi05", stats=norm_stats(quantiles=True, family="pi05"))
    with pytest.raises(CfgrlError, match=r"openpi π0.5 checkpoint.*give discrete_state_input=True") as caught:
        PI0Policy.from_pretrained(directory)
    assert "\n" not in str(caught.value)
    arch = json.loads((pi05_fixture.FIXTURE / "arch.json").read_text())
    policy = PI0Policy.from_pretrained(directory, discrete_state_input=True, **sizes(arch)).eval()
    assert isinstance(policy.model, PI05Model) and policy.config.discrete_state_input
    assert policy.config.camera_names == openpi_format.CAMERAS and policy.config.chunk_size == 50
    assert policy.stats.kind == "quantile"  # openpi normalises every model but π0 by quantiles
    assert any("openpi π0.5 checkpoint" in n for n in policy.load_report)
    io = load_file(str(pi05_fixture.FIXTURE / "io.safetensors"))
    ours = pi05_fixture.reproduce(policy, io, pi05_fixture.reference_inputs(io, arch))
    for name in pi05_fixture.OUTPUTS:
        assert max_relative_error(ours[name], io[name]) <= 1e-4, name


def test_openpi_stats_and_assets_errors(tmp_path, arch):
    with pytest.raises(CfgrlError, match=r"openpi checkpoint without assets/"):
        PI0Policy.from_pretrained(openpi_dir(tmp_path, name="bare", assets=False), **sizes(arch))
    empty = openpi_dir(tmp_path, name="empty")  # assets/ copied without norm stats
    assert not carries_stats(empty)
    with pytest.raises(CfgrlError, match=r"carries no norm stats to tell the robot's dims: give state_dim and action_dim"):
        PI0Policy.from_pretrained(empty, **sizes(arch))
    loaded = PI0Policy.from_pretrained(empty, state_dim=8, action_dim=7, **sizes(arch))
    assert loaded.stats is None
    two = openpi_dir(tmp_path, name="two", stats=norm_stats())
    (two / "assets" / "other").mkdir()
    (two / "assets" / "other" / "norm_stats.json").write_text(json.dumps(norm_stats(quantiles=True)))
    with pytest.raises(CfgrlError, match=r"2 different norm_stats.json files"):
        PI0Policy.from_pretrained(two, **sizes(arch))
