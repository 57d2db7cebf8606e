"""The CFGRL condition: a true unconditional path and per-sample conditioning in one mixed batch."""

from __future__ import annotations

import pytest
import torch

from policy_helpers import make_batch, make_noise, make_policy, perturb_condition

MODES = ["token", "bias", "concat"]
TIME = torch.tensor([0.2, 0.6, 0.95])


def losses(policy, o, batch_size=3):
    batch = make_batch(batch_size, o=o)
    with torch.no_grad():
        return policy.compute_loss(batch, noise=make_noise(batch_size), time=TIME[:batch_size])


@pytest.mark.parametrize("prefix_dropout", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_null_samples_ignore_condition_parameters_bit_for_bit(mode, prefix_dropout):
    policy = make_policy(condition_mode=mode, use_prefix_dropout=prefix_dropout)
    mixed, null = [1, -1, 0], [-1, -1, -1]
    before_mixed, before_null, before_none = losses(policy, mixed), losses(policy, null), losses(policy, None)
    before_conditioned = losses(policy, [1, 1, 0])
    perturb_condition(policy)
    assert torch.equal(losses(policy, null), before_null)
    assert torch.equal(losses(policy, None), before_none)
    assert torch.equal(losses(policy, mixed)[1], before_mixed[1])
    # the perturbation is real: conditioned samples do change
    assert not torch.allclose(losses(policy, [1, 1, 0]), before_conditioned)


@pytest.mark.parametrize("mode", MODES)
def test_null_equals_the_model_without_condition_machinery(mode):
    policy = make_policy(condition_mode=mode)
    perturb_condition(policy)
    batch = make_batch(3, o=None)
    inputs = policy._model_inputs(batch)
    actions = torch.nn.functional.pad((batch["actions"] - policy._norm_on("action_mean")) / policy._norm_on("action_std"), (0, 25))
    with torch.no_grad():
        plain = policy.model.velocity(*inputs, actions, TIME, use_condition=False)
        null = policy.model.velocity(*inputs, actions, TIME, o=torch.tensor([-1, 1, -1]))
    torch.testing.assert_close(null[[0, 2]], plain[[0, 2]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(null[1], plain[1], atol=1e-4)


def test_prefix_dropout_null_drops_the_language():
    policy = make_policy(use_prefix_dropout=True)
    batch = make_batch(2, o=None)
    images, img_masks, tokens, masks, state = policy._model_inputs(batch)
    x_t, time = make_noise(2), TIME[:2]
    with torch.no_grad():
        null = policy.model.velocity(images, img_masks, tokens, masks, state, x_t, time, o=torch.tensor([-1, -1]))
        no_language = policy.model.velocity(images, img_masks, tokens, torch.zeros_like(masks), state, x_t, time, use_condition=False)
        with_language = policy.model.velocity(images, img_masks, tokens, masks, state, x_t, time, use_condition=False)
    torch.testing.assert_close(null, no_language)
    assert not torch.allclose(null, with_language, atol=1e-4)


@pytest.mark.parametrize("prefix_dropout", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_mixed_batch_gives_each_sample_its_own_loss(mode, prefix_dropout):
    policy = make_policy(condition_mode=mode, use_prefix_dropout=prefix_dropout)
    perturb_condition(policy)
    labels = [1, -1, 0]
    together = losses(policy, labels)
    for i, label in enumerate(labels):
        batch = make_batch(3, o=labels)
        alone = {k: (v[i : i + 1] if k != "images" else {c: im[i : i + 1] for c, im in v.items()}) for k, v in batch.items()}
        alone["prompt"] = batch["prompt"][i : i + 1]
        with torch.no_grad():
            single = policy.compute_loss(alone, noise=make_noise(3)[i : i + 1], time=TIME[i : i + 1])
        torch.testing.assert_close(single[0], together[i], rtol=1e-5, atol=1e-6)
    assert len({round(float(x), 6) for x in together}) == 3


def test_labels_must_be_ternary_integers(policy):
    from cfgrl.errors import CfgrlError

    with pytest.raises(CfgrlError, match="accept only 1"):
        losses(policy, [1, 2, -1])
    batch = make_batch(3)
    batch["o"] = torch.tensor([1.0, 0.0, -1.0])
    with pytest.raises(CfgrlError, match="integer tensor"):
        policy.compute_loss(batch)
