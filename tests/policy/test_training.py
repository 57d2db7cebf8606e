"""Training-side behaviour: loss shapes and masking, overfitting a fixed batch, trainer helpers, presets."""

from __future__ import annotations

import pytest
import torch

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy import PI0Config, PI0Model, PI0Policy
from policy_helpers import make_batch, make_config, make_noise, make_policy


def test_loss_shapes_and_padding_mask(policy):
    batch = make_batch(3, o=[Label.OPTIMAL, Label.NOT_OPTIMAL, Label.NULL])
    noise, time = make_noise(3), torch.tensor([0.3, 0.5, 0.7])
    losses = policy.compute_loss(batch, noise=noise, time=time)
    assert losses.shape == (3,) and torch.isfinite(losses).all() and losses.requires_grad
    # padded steps and padded action dims do not count (as lerobot 0.6.1's PI0Policy)
    inputs = policy._model_inputs(batch)
    actions = (batch["actions"] - policy._norm_on("action_mean")) / policy._norm_on("action_std")
    with torch.no_grad():
        elementwise = policy.model(inputs, torch.nn.functional.pad(actions, (0, 25)),
                                   noise=noise, time=time, o=batch["o"])
    kept = elementwise[:, :, :7] * (~batch["action_is_pad"])[:, :, None]
    torch.testing.assert_close(losses.detach(), kept.mean(dim=(1, 2)))
    assert losses[0] < elementwise[0, :, :7].mean()


def test_lower_level_forward_returns_elementwise_losses(policy):
    inputs = policy._model_inputs(make_batch(2))
    actions = torch.randn(2, 50, 32)
    out = policy.model(inputs, actions, noise=torch.randn(2, 50, 32), time=torch.tensor([0.2, 0.9]),
                       plain=True)
    assert out.shape == (2, 50, 32)


def test_flow_matching_interpolant_and_target():
    # at t=1 the input is pure noise; a model predicting v makes loss = |noise - a - v|^2
    policy = make_policy()
    batch = make_batch(2)
    inputs = policy._model_inputs(batch)
    actions, noise, t = torch.randn(2, 50, 32), torch.randn(2, 50, 32), torch.tensor([1.0, 0.25])
    with torch.no_grad():
        v = policy.model.velocity(inputs, t[:, None, None] * noise + (1 - t[:, None, None]) * actions, t, plain=True)
        losses = policy.model(inputs, actions, noise=noise, time=t, plain=True)
    torch.testing.assert_close(losses, (noise - actions - v) ** 2)


def test_tiny_policy_overfits_a_fixed_batch():
    policy = make_policy(condition_mode="token").train()
    batch = make_batch(2, o=[Label.OPTIMAL, Label.NULL])
    noise, time = make_noise(2), torch.tensor([0.4, 0.8])
    optimiser = torch.optim.AdamW(policy.configure_training(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = policy.compute_loss(batch, noise=noise, time=time).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first


def test_configure_training_freezes_the_requested_parts(policy):
    everything = policy.configure_training()
    assert len(everything) == len(list(policy.parameters()))
    no_vision = policy.configure_training(freeze_vision=True)
    assert not any(p.requires_grad for p in policy.model.transformer.vision.parameters())
    assert all(p.requires_grad for p in policy.model.transformer.prefix_lm.parameters())
    expert_only = policy.configure_training(train_expert_only=True, gradient_checkpointing=True)
    assert len(expert_only) < len(no_vision) < len(everything)
    assert not any(p.requires_grad for p in policy.model.transformer.prefix_lm.parameters())
    assert all(p.requires_grad for p in policy.model.condition.parameters())
    assert policy.model.transformer.gradient_checkpointing


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        policy = make_policy().train()
        policy.configure_training(gradient_checkpointing=checkpointing)
        policy.compute_loss(make_batch(2, o=[Label.OPTIMAL, Label.NULL]), noise=make_noise(2), time=torch.tensor([0.3, 0.6])).mean().backward()
        grads.append(policy.model.transformer.expert.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_presets_have_the_documented_sizes():
    with torch.device("meta"):
        pi0 = PI0Model(PI0Config.from_preset("pi0"))
        mini = PI0Model(PI0Config.from_preset("mini"))
    total = sum(p.numel() for p in pi0.parameters())
    assert 3.2e9 < total < 4.0e9
    assert len(mini.transformer.prefix_lm.layers) == 18 and len(mini.transformer.vision.encoder.layers) == 27
    assert mini.transformer.prefix_lm.norm.weight.shape == (256,) and mini.transformer.expert.norm.weight.shape == (128,)
    cfg = PI0Config.from_preset("mini")
    assert cfg.tokens_per_image == 256 and cfg.max_token_len == 48 and cfg.head_dim == 32


def test_bad_configs_are_clear_errors():
    with pytest.raises(CfgrlError, match="unknown condition_mode 'film'; accepted: token, bias, concat"):
        make_config(condition_mode="film")
    with pytest.raises(CfgrlError, match="unknown policy preset"):
        PI0Config.from_preset("huge")
    with pytest.raises(CfgrlError, match="unknown PI0 config field"):
        make_config(widht=3)
    with pytest.raises(CfgrlError, match="action_dim"):
        make_config(action_dim=40)


def test_pi0_without_a_tokenizer_is_a_clear_error():
    policy = PI0Policy(make_config(tokenizer="sentencepiece"))
    with pytest.raises(CfgrlError, match="needs the PaliGemma SentencePiece tokenizer"):
        policy.sample_actions(make_batch(1))


def test_the_small_preset_trains_and_sits_between_tiny_and_mini():
    """``small`` is a drop-in for tiny (same tokenizer and tokens) with more capacity, well under mini's."""
    from cfgrl.optimality import Label
    from cfgrl.policy import PRESETS, NormStats, PI0Config, PI0Policy

    assert all(PRESETS["small"][k] == PRESETS["tiny"][k] for k in ("tokenizer", "max_token_len", "patch_size", "vocab_size"))
    sizes = {}
    for name in ("tiny", "small", "mini"):
        with torch.device("meta"):
            sizes[name] = sum(p.numel() for p in PI0Policy(PI0Config.from_preset(name)).parameters())
    assert sizes["tiny"] < sizes["small"] < sizes["mini"] / 4
    torch.manual_seed(0)
    config = PI0Config.from_preset("small", image_size=32)
    policy = PI0Policy(config, stats=NormStats.identity(config.state_dim, config.action_dim))
    data = {"images": {cam: torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8) for cam in config.camera_names},
            "state": torch.randn(2, 8), "actions": torch.randn(2, config.chunk_size, 7),
            "action_is_pad": torch.zeros(2, config.chunk_size, dtype=torch.bool), "prompt": ["a", "b"],
            "o": torch.tensor([int(Label.OPTIMAL), int(Label.NULL)])}
    policy.compute_loss(data).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.model.condition.parameters())
