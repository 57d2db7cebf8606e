"""Our PI0 reproduces lerobot 0.6.1's PI0 on the same weights, inputs, noise and time (float32).

The fixture (tests/fixtures/lerobot_pi0/, made by tests/fixtures/make_lerobot_pi0.py) is a tiny random
lerobot PI0 saved with lerobot's own save_pretrained, its architecture sizes (arch.json) and the inputs
and outputs of lerobot's inner model (io.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cfgrl.optimality import Label
from cfgrl.policy import ModelInputs, PI0Policy
from policy_helpers import fixture_sizes as sizes, max_relative_error

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_pi0"


@pytest.fixture(scope="module")
def loaded():
    arch = json.loads((FIXTURE / "arch.json").read_text())
    policy = PI0Policy.from_pretrained(FIXTURE, **sizes(arch)).eval()
    io = load_file(str(FIXTURE / "io.safetensors"))
    cameras = sorted(k for k in io if k.startswith("image_") and "mask" not in k)
    images = [io[name] for name in cameras]
    masks = [io[name.replace("image_", "image_mask_")] for name in cameras]
    return policy, arch, io, ModelInputs(images, masks, io["lang_tokens"], io["lang_masks"], io["state"])


def test_fixture_loads_with_our_config_and_stats(loaded):
    policy, arch, _, _ = loaded
    assert policy.config.camera_names == ("image", "wrist_image", "empty_camera_0")
    assert (policy.config.state_dim, policy.config.action_dim) == (8, 7)
    stats = arch["dataset_stats"]
    np.testing.assert_allclose(policy.stats.state_mean, stats["observation.state"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(policy.stats.action_std, stats["action"]["std"], rtol=1e-6)
    assert any("initialised new condition parameters" in note for note in policy.load_report)
    assert not policy.condition_trained


def test_embeddings_match_lerobot(loaded):
    policy, _, io, prefix = loaded
    with torch.no_grad():
        prefix_embs, _, _ = policy.model.embed_prefix(prefix)
        # a ∅ suffix has no condition machinery: the plain PI0's
        suffix_embs = policy.model.embed_suffix(io["state"], io["x_t"], io["time"], torch.full((2,), Label.NULL)).tokens
    assert max_relative_error(prefix_embs, io["prefix_embs"]) <= 1e-4
    assert max_relative_error(suffix_embs, io["suffix_embs"]) <= 1e-4


def test_training_losses_match_lerobot(loaded):
    policy, _, io, prefix = loaded
    with torch.no_grad():
        losses = policy.model(prefix, io["actions"], noise=io["noise"], time=io["time"], plain=True)
        velocity = policy.model.velocity(prefix, io["x_t"], io["time"], plain=True)
    assert losses.shape == io["losses"].shape == (2, 50, 32)
    assert max_relative_error(velocity, io["velocity"]) <= 1e-4
    assert max_relative_error(losses, io["losses"]) <= 1e-4


def test_cached_sampling_matches_lerobot(loaded):
    policy, _, io, prefix = loaded
    with torch.no_grad():
        cache, prefix_pad = policy.model._prefix_cache(prefix, None, 2, 1)  # no language dropped
        cached = policy.model._suffix_velocity(cache, prefix_pad, io["state"], io["x_t"], io["time"], torch.full((2,), Label.NULL))
        sampled = policy.model.sample_actions(prefix, noise=io["sample_noise"], plain=True)
    assert max_relative_error(cached, io["velocity_cached"]) <= 1e-4
    assert max_relative_error(sampled, io["sampled_actions"]) <= 1e-4
