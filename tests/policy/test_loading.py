"""Loading built on the meta device equals building every weight and copying the file in; bf16 loading;
LoRA adapters (peft) merge into plain weights that act as the adapter model does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cfgrl.errors import CfgrlError
from cfgrl.policy import ModelInputs, PI0Policy, lerobot_format
from cfgrl.policy import lora
from policy_helpers import fixture_sizes, make_obs, make_policy

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _inputs(policy: PI0Policy, batch: int = 2) -> ModelInputs:
    """Model-ready inputs (the fixtures carry no tokenizer: token ids are drawn directly)."""
    c, g = policy.config, torch.Generator().manual_seed(3)
    images = [torch.rand(batch, 3, c.image_size, c.image_size, generator=g) * 2 - 1 for _ in c.camera_names]
    masks = [torch.ones(batch, dtype=torch.bool) for _ in c.camera_names]
    tokens = torch.randint(0, c.vocab_size, (batch, 12), generator=g)
    state = torch.randn(batch, c.max_state_dim, generator=g) if c.family == "pi0" else None
    return ModelInputs(images, masks, tokens, torch.ones(batch, 12, dtype=torch.bool), state)


def _sample(policy: PI0Policy) -> torch.Tensor:
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim, generator=torch.Generator().manual_seed(4))
    return policy.model.sample_actions(_inputs(policy), noise=noise, plain=True)


@pytest.mark.parametrize("name", ["lerobot_pi0", "lerobot_pi05"])
def test_meta_device_loading_equals_building_then_copying(name):
    directory = FIXTURES / name
    sizes = fixture_sizes(json.loads((directory / "arch.json").read_text()))
    loaded = PI0Policy.from_pretrained(directory, **sizes).eval()

    # the way loading worked before: every weight built (random), then the file copied into it
    eager = PI0Policy(loaded.config, stats=loaded.stats).eval()
    state, _ = lerobot_format.to_ours(load_file(str(directory / "model.safetensors")))
    result = eager.model.load_state_dict(state, strict=False)
    assert all(k.startswith("condition.") for k in result.missing_keys)
    eager.model.condition.load_state_dict(loaded.model.condition.state_dict())

    ours = dict([*loaded.named_parameters(), *loaded.named_buffers()])
    theirs = dict([*eager.named_parameters(), *eager.named_buffers()])
    assert ours.keys() == theirs.keys()
    for key in ours:  # non-persistent buffers (RoPE frequencies, position ids) included
        assert not ours[key].is_meta and ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
    assert torch.equal(_sample(loaded), _sample(eager))


def test_bf16_loading_holds_bf16_weights_and_fp32_buffers(tmp_path):
    directory = FIXTURES / "lerobot_pi0"
    sizes = fixture_sizes(json.loads((directory / "arch.json").read_text()))
    full = PI0Policy.from_pretrained(directory, **sizes).eval()
    half = PI0Policy.from_pretrained(directory, dtype=torch.bfloat16, **sizes).eval()
    assert half.dtype == torch.bfloat16 and {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.model.transformer.rotary.inv_freq.dtype == torch.float32  # RoPE keeps its precision
    a, b = _sample(full), _sample(half)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert float((a - b).abs().max()) < 0.1 * float(a.abs().max())  # the same policy, rounded


def test_our_checkpoint_loads_in_bf16_with_its_id_checked_on_the_stored_bytes(tmp_path):
    policy = make_policy()
    policy.save_pretrained(tmp_path / "p")
    half = PI0Policy.from_pretrained(tmp_path / "p", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert half.policy_id != policy.policy_id  # other weights act: another id (of the bf16 weights held)
    again = PI0Policy.from_pretrained(tmp_path / "p")
    assert again.policy_id == policy.policy_id

    weights = load_file(str(tmp_path / "p" / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    from safetensors.torch import save_file

    save_file(weights, str(tmp_path / "p" / "model.safetensors"))
    with pytest.raises(CfgrlError, match="differs from the recorded policy id"):
        PI0Policy.from_pretrained(tmp_path / "p", dtype=torch.bfloat16)


def _with_adapters(policy: PI0Policy, targets=("q_proj", "v_proj")):
    settings = lora.LoraSettings(rank=4, alpha=8.0, dropout=0.0, targets=targets)
    lora.attach(policy, settings)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():  # peft starts B at zero (no change): give the adapters something to merge
        for name, p in policy.named_parameters():
            if ".lora_B." in name or ".lora_A." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_lora_merged_policy_acts_as_the_adapter_model_and_loads_plain(tmp_path):
    policy = make_policy()
    base = policy.weights()
    _with_adapters(policy)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".modules_to_save." in n for n in trainable)
    assert any("condition.modules_to_save" in n for n in trainable)  # the condition trains too
    towers = {n.split(".")[2] for n in trainable if ".lora_" in n}
    assert towers == {"vision", "prefix_lm", "expert"}  # q_proj is in all three

    obs, noise = make_obs(2), torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(1))
    policy.condition_trained = True
    adapted = policy.sample_actions(obs, cfg_scale=2.0, noise=noise)
    merged = policy.weights()
    assert merged.keys() == base.keys()
    changed = {k for k in merged if not torch.equal(merged[k], base[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)

    policy.save_pretrained(tmp_path / "merged")
    plain = PI0Policy.from_pretrained(tmp_path / "merged")
    assert not lora.is_attached(plain.model)
    assert plain.policy_id == policy.policy_id
    torch.testing.assert_close(plain.sample_actions(obs, cfg_scale=2.0, noise=noise), adapted, rtol=0, atol=1e-5)


def test_lora_targets_that_match_nothing_are_one_clear_error():
    with pytest.raises(CfgrlError, match="'attn_qkv' matches no linear layer"):
        lora.attach(make_policy(), lora.LoraSettings(4, 8.0, 0.0, ("q_proj", "attn_qkv")))
    with pytest.raises(CfgrlError, match="not a regular expression"):
        lora.attach(make_policy(), lora.LoraSettings(4, 8.0, 0.0, ("q_proj(",)))


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_a_checkpoint_written_before_the_layer_pairs_loads_and_samples_as_it_did(family):
    """tests/fixtures/cfgrl_tiny (make_cfgrl_tiny.py, written before the layers were grouped in pairs for
    FSDP): every key still loads (the recorded id verifies) and the same actions come out."""
    directory = FIXTURES / "cfgrl_tiny" / family
    policy = PI0Policy.from_pretrained(directory).eval()
    io = load_file(str(directory / "io.safetensors"))
    meta = json.loads((directory / "observation.json").read_text())
    obs = {"images": {k[len("image_"):]: v for k, v in io.items() if k.startswith("image_")}, "state": io["state"], "prompt": meta["prompt"]}
    actions = policy.sample_actions(obs, cfg_scale=meta["cfg_scale"], noise=io["noise"])
    torch.testing.assert_close(actions, io["actions"], rtol=0, atol=1e-5)
