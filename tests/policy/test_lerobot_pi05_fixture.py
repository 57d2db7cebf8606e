"""Our π0.5 reproduces lerobot 0.6.1's π0.5 on the same weights, inputs, noise and time (float32), and
writes the same state-in-prompt text.

The fixture (tests/fixtures/lerobot_pi05/, made by tests/fixtures/make_lerobot_pi05.py) is a tiny random
lerobot PI05Policy saved with lerobot's own save_pretrained, its sizes (arch.json), the inputs and
outputs of lerobot's inner model (io.safetensors) and lerobot's prompts for given states (prompts.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy import ModelInputs, PI05Model, PI0Policy
from cfgrl.policy.tokenizer import discretize_state, pi05_prompt
from policy_helpers import fixture_sizes, max_relative_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "lerobot_pi05"
# what lerobot computed, in io.safetensors, and ``reproduce`` computes again
OUTPUTS = ("prefix_embs", "suffix_embs", "adarms_cond", "losses", "velocity", "velocity_cached", "sampled_actions")


def reference_inputs(io: dict[str, torch.Tensor], arch: dict) -> ModelInputs:
    """lerobot's model inputs in io.safetensors as ours (π0.5: the state is in the prompt, no state tensor)."""
    size = arch["vision"]["image_size"]
    missing = torch.full((2, 3, size, size), -1.0)  # the third camera is absent (not stored: it is all -1)
    images = [io["image_0"], io["image_1"], missing]
    masks = [io["image_mask_0"], io["image_mask_1"], torch.zeros(2, dtype=torch.bool)]
    return ModelInputs(images, masks, io["lang_tokens"], io["lang_masks"], None)


def reproduce(policy: PI0Policy, io: dict[str, torch.Tensor], inputs: ModelInputs) -> dict[str, torch.Tensor]:
    """Our outputs under the names of lerobot's in io.safetensors (OUTPUTS), on its inputs, noise and time."""
    null = torch.full((2,), Label.NULL)
    with torch.no_grad():
        prefix_embs, _, _ = policy.model.embed_prefix(inputs)
        suffix = policy.model.embed_suffix(None, io["x_t"], io["time"], null)
        cache, prefix_pad = policy.model._prefix_cache(inputs, None, 2, 1)
        return {
            "prefix_embs": prefix_embs, "suffix_embs": suffix.tokens, "adarms_cond": suffix.expert_cond,
            "losses": policy.model(inputs, io["actions"], noise=io["noise"], time=io["time"], plain=True),
            "velocity": policy.model.velocity(inputs, io["x_t"], io["time"], plain=True),
            "velocity_cached": policy.model._suffix_velocity(cache, prefix_pad, None, io["x_t"], io["time"], null),
            "sampled_actions": policy.model.sample_actions(inputs, noise=io["sample_noise"], plain=True),
        }


@pytest.fixture(scope="module")
def loaded():
    arch = json.loads((FIXTURE / "arch.json").read_text())
    policy = PI0Policy.from_pretrained(FIXTURE, **fixture_sizes(arch)).eval()
    io = load_file(str(FIXTURE / "io.safetensors"))
    return policy, arch, io, reference_inputs(io, arch)


def test_a_lerobot_pi05_directory_loads_as_our_pi05(loaded):
    policy, arch, _, _ = loaded
    assert isinstance(policy.model, PI05Model)
    config = policy.config
    assert (config.family, config.discrete_state_input, config.chunk_size, config.max_token_len) == ("pi05", True, 50, 48)
    assert config.camera_names == ("image", "wrist_image", "empty_camera_0")
    np.testing.assert_allclose(policy.stats.state_std, arch["dataset_stats"]["observation.state"]["std"], rtol=1e-6)
    assert any("initialised new condition parameters" in note for note in policy.load_report)


@pytest.fixture(scope="module")
def outputs(loaded):
    policy, _, io, inputs = loaded
    return reproduce(policy, io, inputs)


@pytest.mark.parametrize("name", OUTPUTS)
def test_embeddings_time_conditioning_velocities_losses_and_sampling_match_lerobot(loaded, outputs, name):
    io = loaded[2]
    assert outputs[name].shape == io[name].shape
    assert max_relative_error(outputs[name], io[name]) <= 1e-4


def test_state_in_prompt_text_matches_lerobot(loaded):
    policy = loaded[0]
    reference = json.loads((FIXTURE / "prompts.json").read_text())
    states = np.array(reference["normalised_states"], dtype=np.float32)
    ours = [pi05_prompt(task, row).text for task, row in zip(reference["tasks"], discretize_state(states))]
    assert ours == reference["prompts"]
    # the policy writes the same text from states it has normalised
    assert [p.text for p in policy._prompts(reference["tasks"], torch.from_numpy(states))] == reference["prompts"]


@pytest.mark.parametrize("config_of, weights_of", [("lerobot_pi05", "lerobot_pi0"), ("lerobot_pi0", "lerobot_pi05")])
def test_a_config_of_one_family_over_the_others_weights_is_one_clear_error(tmp_path, config_of, weights_of):
    mixed = tmp_path / "mixed"
    shutil.copytree(FIXTURES / weights_of, mixed)
    shutil.copyfile(FIXTURES / config_of / "config.json", mixed / "config.json")
    claimed, held = config_of.split("_")[1], weights_of.split("_")[1]
    with pytest.raises(CfgrlError, match=f"describes a {claimed} policy but model.safetensors holds {held} weights") as caught:
        PI0Policy.from_pretrained(mixed)
    assert "\n" not in str(caught.value)


def test_export_writes_lerobots_pi05_keys_and_shapes(loaded, tmp_path):
    from safetensors import safe_open

    from cfgrl.policy.checkpoint import export_lerobot

    exported = export_lerobot(loaded[0], tmp_path / "exported")
    shapes = {}
    for directory in (FIXTURE, exported):
        with safe_open(str(directory / "model.safetensors"), "pt") as handle:
            shapes[directory] = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
    assert shapes[exported] == shapes[FIXTURE]
    assert json.loads((exported / "config.json").read_text())["type"] == "pi05"
