"""The CFGRL condition, in both families (PI0, π0.5) and every mode: a true unconditional path,
per-sample conditioning in one mixed batch, labels required, and the plain base model as an explicit flag."""

from __future__ import annotations

import pytest
import torch

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from policy_helpers import FAMILIES, make_batch, make_noise, make_policy, perturb_condition

MODES = ["token", "bias", "concat"]
TIME = torch.tensor([0.2, 0.6, 0.95])
ONE, ZERO, NULL = Label.OPTIMAL, Label.NOT_OPTIMAL, Label.NULL


def losses(policy, o=None, batch_size=3, plain=False):
    """Per-sample losses under labels ``o``, or of the plain base PI0 (``plain=True``, no labels)."""
    batch = make_batch(batch_size, o=o)
    with torch.no_grad():
        return policy.compute_loss(batch, noise=make_noise(batch_size), time=TIME[:batch_size], plain=plain)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_null_samples_ignore_condition_parameters_bit_for_bit(mode, prefix_dropout, family):
    policy = make_policy(family=family, condition_mode=mode, use_prefix_dropout=prefix_dropout)
    mixed, null = [ONE, NULL, ZERO], [NULL] * 3
    before_mixed, before_null, before_plain = losses(policy, mixed), losses(policy, null), losses(policy, plain=True)
    before_conditioned = losses(policy, [ONE, ONE, ZERO])
    perturb_condition(policy)
    assert torch.equal(losses(policy, null), before_null)
    assert torch.equal(losses(policy, plain=True), before_plain)
    assert torch.equal(losses(policy, mixed)[1], before_mixed[1])
    # the perturbation is real: conditioned samples do change
    assert not torch.allclose(losses(policy, [ONE, ONE, ZERO]), before_conditioned)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_null_equals_the_model_without_condition_machinery(mode, family):
    policy = make_policy(family=family, condition_mode=mode)
    perturb_condition(policy)
    batch = make_batch(3)
    inputs = policy._model_inputs(batch)
    actions = torch.nn.functional.pad((batch["actions"] - policy._norm_on("action_mean")) / policy._norm_on("action_std"), (0, 25))
    with torch.no_grad():
        plain = policy.model.velocity(inputs, actions, TIME, plain=True)
        null = policy.model.velocity(inputs, actions, TIME, o=torch.tensor([NULL, ONE, NULL]))
    torch.testing.assert_close(null[[0, 2]], plain[[0, 2]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(null[1], plain[1], atol=1e-4)


def test_prefix_dropout_null_drops_the_language():
    policy = make_policy(use_prefix_dropout=True)
    batch = make_batch(2)
    inputs = policy._model_inputs(batch)
    x_t, time = make_noise(2), TIME[:2]
    with torch.no_grad():
        null = policy.model.velocity(inputs, x_t, time, o=torch.tensor([NULL, NULL]))
        no_language = policy.model.velocity(inputs._replace(lang_masks=torch.zeros_like(inputs.lang_masks)), x_t, time, plain=True)
        with_language = policy.model.velocity(inputs, x_t, time, plain=True)
    torch.testing.assert_close(null, no_language)
    assert not torch.allclose(null, with_language, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
def test_plain_flag_and_null_labels_differ_only_under_prefix_dropout(prefix_dropout, family):
    # plain=True keeps every prompt; a ∅ label drops it under prefix dropout, and is the plain model without
    policy = make_policy(family=family, use_prefix_dropout=prefix_dropout)
    perturb_condition(policy)
    plain, null = losses(policy, plain=True), losses(policy, [NULL] * 3)
    if prefix_dropout:
        assert not torch.allclose(plain, null, atol=1e-4)
        without_dropout = make_policy(family=family, use_prefix_dropout=False)  # the same weights (same seed)
        perturb_condition(without_dropout)
        assert torch.equal(plain, losses(without_dropout, plain=True))
    else:
        assert torch.equal(plain, null)


def test_pi05_prefix_dropout_drops_the_task_text_but_keeps_the_state_text():
    policy = make_policy(family="pi05", use_prefix_dropout=True)
    batch = make_batch(2)
    inputs = policy._model_inputs(batch)
    kept = inputs.lang_masks & ~inputs.task_masks
    text = bytes((inputs.lang_tokens[0][kept[0]][1:] - 3).tolist()).decode()  # after BOS
    assert text == "Task: , State: " + text.split("State: ")[1] and text.endswith(";\nAction: ")
    assert len(text.split("State: ")[1].split(";")[0].split()) == 8  # every state bin is kept
    x_t, time = make_noise(2), TIME[:2]
    with torch.no_grad():
        null = policy.model.velocity(inputs, x_t, time, o=torch.tensor([NULL, NULL]))
        without_task = policy.model.velocity(inputs._replace(lang_masks=kept), x_t, time, plain=True)
        with_task = policy.model.velocity(inputs, x_t, time, plain=True)
    torch.testing.assert_close(null, without_task)
    assert not torch.allclose(null, with_task, atol=1e-4)


def test_compute_loss_requires_labels_unless_plain(policy):
    with pytest.raises(CfgrlError, match=r"condition labels o are required.*plain=True") as caught:
        policy.compute_loss(make_batch(3))
    assert "\n" not in str(caught.value)
    with pytest.raises(CfgrlError, match="takes no labels"):
        policy.compute_loss(make_batch(3, o=[ONE, NULL, ZERO]), plain=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_mixed_batch_gives_each_sample_its_own_loss(mode, prefix_dropout, family):
    policy = make_policy(family=family, condition_mode=mode, use_prefix_dropout=prefix_dropout)
    perturb_condition(policy)
    labels = [ONE, NULL, ZERO]
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
    with pytest.raises(CfgrlError, match="accept only 1"):
        losses(policy, [1, 2, -1])  # 2 is no label
    batch = make_batch(3)
    batch["o"] = torch.tensor([1.0, 0.0, -1.0])
    with pytest.raises(CfgrlError, match="integer tensor"):
        policy.compute_loss(batch)
