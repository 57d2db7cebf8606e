"""openpi PyTorch checkpoints, as openpi's convert_jax_model_to_pytorch.py writes them, built at test time
from the lerobot PI0 fixture (tests/fixtures/lerobot_pi0): the same weights without lerobot's ``model.``
prefix and with only the surviving name of the tied embedding pair, openpi's five-key config.json and
assets/<asset_id>/norm_stats.json. Loaded through PI0Policy.from_pretrained, a π0 one reproduces the
fixture's lerobot outputs; π0.5 is told by its weights and converted to lerobot's terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cfgrl.errors import CfgrlError
from cfgrl.policy import PI0Policy
from cfgrl.policy import openpi_format
from cfgrl.policy.checkpoint import carries_stats
from test_lerobot_fixture import FIXTURE, max_relative_error, sizes

EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
CONFIG = {"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
          "precision": "float32"}


def _pi05(weights: dict) -> dict:
    """π0's weights renamed into π0.5's parameter set: time MLP instead of state and action-time MLPs,
    adaptive expert norms (a dense layer producing scale, shift and gate)."""
    out = {k: v for k, v in weights.items() if not k.startswith(("state_proj.", "action_time_mlp_"))}
    width = weights["action_time_mlp_out.weight"].shape[0]
    for name in ("time_mlp_in", "time_mlp_out"):
        out[f"{name}.weight"], out[f"{name}.bias"] = torch.zeros(width, width), torch.zeros(width)
    for key in [k for k in out if "gemma_expert" in k and k.endswith("norm.weight")]:
        stem = key[: -len(".weight")]
        del out[key]
        out[f"{stem}.dense.weight"], out[f"{stem}.dense.bias"] = torch.zeros(3 * width, width), torch.zeros(3 * width)
    return out


def norm_stats(pad_to: int | None = None, quantiles: bool = False) -> dict:
    arch = json.loads((FIXTURE / "arch.json").read_text())
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
    weights = {k[len("model."):]: v for k, v in load_file(str(FIXTURE / "model.safetensors")).items() if k.startswith("model.")}
    del weights[EMBED]  # safetensors' save_model keeps lm_head of the tied pair
    del weights["paligemma_with_expert.gemma_expert.lm_head.weight"]
    save_file(_pi05(weights) if family == "pi05" else weights, str(directory / "model.safetensors"))
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
    prefix = ([io[c] for c in cameras], [io[c.replace("image_", "image_mask_")] for c in cameras], io["lang_tokens"], io["lang_masks"])
    with torch.no_grad():
        losses = policy.model(*prefix, io["state"], io["actions"], noise=io["noise"], time=io["time"], plain=True)
        velocity = policy.model.velocity(*prefix, io["state"], io["x_t"], io["time"], plain=True)
        sampled = policy.model.sample_actions(*prefix, io["state"], noise=io["sample_noise"], plain=True)
    assert max_relative_error(losses, io["losses"]) <= 1e-4
    assert max_relative_error(velocity, io["velocity"]) <= 1e-4
    assert max_relative_error(sampled, io["sampled_actions"]) <= 1e-4


def test_openpi_pi05_is_told_by_its_weights_and_converted_to_lerobot_terms(tmp_path):
    directory = openpi_dir(tmp_path, name="pi0_base", family="pi05", stats=norm_stats(quantiles=True), horizon=10)
    converted = openpi_format.to_lerobot(directory, CONFIG | {"action_horizon": 10}, load_file(str(directory / "model.safetensors")))
    assert converted.family == "pi05" and converted.meta["type"] == "pi05" and converted.meta["chunk_size"] == 10
    assert converted.meta["normalization_mapping"]["ACTION"] == "QUANTILES" and converted.stats.kind == "quantile"
    assert "model.time_mlp_in.weight" in converted.weights and all(k.startswith("model.") for k in converted.weights)
    with pytest.raises(CfgrlError, match=r"openpi π0.5 checkpoint.*give discrete_state_input=True"):
        PI0Policy.from_pretrained(directory)
    with pytest.raises(CfgrlError, match=r"π0.5 model is not available in this build"):
        PI0Policy.from_pretrained(directory, discrete_state_input=False)


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
