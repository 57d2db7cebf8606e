"""The text condition mode: the label is the prompt's advantage line (RECAP's way), ∅ the plain prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from cfgrl.policy.tokenizer import ByteTokenizer, SentencePieceTokenizer, pi05_prompt, pi0_prompt
from policy_helpers import FAMILIES, count_sampling_passes, make_batch, make_noise, make_obs, make_policy, train_sentencepiece


def text_policy(family: str, **overrides):
    """A text-mode policy whose PI0 prompts have room for the advantage line (π0.5's preset has 128 tokens)."""
    extra = {"max_token_len": 64} if family == "pi0" else {"discrete_state_input": True}
    return make_policy(family=family, condition_mode="text", **{"num_steps": 3, **extra, **overrides})


def labels(value: Label, batch: int) -> torch.Tensor:
    return torch.full((batch,), int(value), dtype=torch.long)


def test_the_advantage_line_sits_after_the_prompt_for_pi0_and_before_action_for_pi05():
    assert pi0_prompt("open the drawer", Label.OPTIMAL).text == "open the drawer\nAdvantage: positive"
    assert pi0_prompt("open the drawer", Label.NOT_OPTIMAL).text == "open the drawer\nAdvantage: negative"
    with_state = pi05_prompt("open the drawer", np.array([3, 250]), Label.OPTIMAL).text
    assert with_state == "Task: open the drawer, State: 3 250;\nAdvantage: positive\nAction: "
    assert pi05_prompt("open the drawer", None, Label.NOT_OPTIMAL).text == "open the drawer\nAdvantage: negative"
    for bins in (None, np.array([3, 250])):
        assert pi05_prompt("open the drawer", bins, Label.NULL) == pi05_prompt("open the drawer", bins)
    assert pi0_prompt("open the drawer", Label.NULL) == pi0_prompt("open the drawer")


@pytest.mark.parametrize("family", FAMILIES)
def test_null_prompts_are_exactly_the_plain_prompts_token_ids(family, tmp_path):
    obs = make_obs(3)
    sentencepiece = SentencePieceTokenizer(train_sentencepiece(tmp_path), 128)
    for tokenizer in (ByteTokenizer(128), sentencepiece):
        policy = text_policy(family)
        policy._tokenizer = tokenizer
        plain, null = policy._model_inputs(obs), policy._model_inputs(obs, labels(Label.NULL, 3))
        optimal = policy._model_inputs(obs, labels(Label.OPTIMAL, 3))
        assert torch.equal(plain.lang_tokens, null.lang_tokens) and torch.equal(plain.lang_masks, null.lang_masks)
        assert (optimal.lang_masks.sum(1) > plain.lang_masks.sum(1)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_text_mode_learns_no_condition_parameters_and_refuses_to_fold(family):
    policy = text_policy(family)
    assert not list(policy.model.condition.parameters())
    with pytest.raises(CfgrlError, match="text-mode condition cannot be folded.*'Advantage: positive' added to every prompt"):
        policy.model.condition.folded_shift(Label.OPTIMAL)


def manual_text_euler(policy, obs, noise, w):
    """Reference: the o = 1 prompts and the plain prompts run separately, uncached, mixed v_∅ + w (v_1 − v_∅)."""
    batch, steps = noise.shape[0], policy.config.num_steps
    optimal, plain = policy._model_inputs(obs, labels(Label.OPTIMAL, batch)), policy._model_inputs(obs)
    x, time = noise.clone(), torch.tensor(1.0)
    for _ in range(steps):
        t = time.expand(batch)
        v_cond = policy.model.velocity(optimal, x, t, o=labels(Label.OPTIMAL, batch))
        v_null = policy.model.velocity(plain, x, t, o=labels(Label.NULL, batch))
        x = x - (v_null + w * (v_cond - v_null)) / steps
        time = time - 1.0 / steps
    return x[:, :, : policy.config.action_dim] * policy._norm_on("action_std") + policy._norm_on("action_mean")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
def test_guided_sampling_equals_both_prompts_run_separately(family, prefix_dropout):
    policy = text_policy(family, use_prefix_dropout=prefix_dropout)  # with it, the ∅ prompt also loses its task text
    policy.condition_trained = True
    obs, noise = make_obs(2), make_noise(2)
    results = {}
    with torch.no_grad():
        for w in (1.0, 0.0, 2.5):
            results[w] = policy.sample_actions(obs, cfg_scale=w, noise=noise)
            torch.testing.assert_close(results[w], manual_text_euler(policy, obs, noise, w), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(results[1.0], results[0.0], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_guidance_runs_two_prefixes_in_one_batch_with_images_encoded_once(family):
    policy = text_policy(family, num_steps=2)
    policy.condition_trained = True
    calls = count_sampling_passes(policy, cfg_scale=2.5)
    assert calls == {"images": 1, "prefix": [6], "suffix": [6, 6]}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mixed_batch_is_one_forward_with_each_prompt_its_own_label(family):
    policy = text_policy(family)
    o = [Label.OPTIMAL, Label.NOT_OPTIMAL, Label.NULL]
    batch, noise, time = make_batch(3, o=o), make_noise(3), torch.tensor([0.3, 0.6, 0.9])
    forwards = []
    forward = policy.model.transformer.forward
    policy.model.transformer.forward = lambda *a, **k: forwards.append(1) or forward(*a, **k)
    mixed = policy.compute_loss(batch, noise=noise, time=time)
    assert len(forwards) == 1
    for i, label in enumerate(o):
        alone = {**make_batch(3, o=o), "o": labels(label, 3)}
        alone_loss = policy.compute_loss(alone, noise=noise, time=time)
        torch.testing.assert_close(mixed[i], alone_loss[i], rtol=1e-5, atol=1e-6)
    null = policy.compute_loss({**batch, "o": labels(Label.NULL, 3)}, noise=noise, time=time)
    assert not torch.allclose(mixed[:2], null[:2])  # the advantage line changes what the model sees


def test_a_prompt_that_would_cut_the_advantage_text_is_an_error():
    policy = make_policy(condition_mode="text", max_token_len=32)  # fits "put the cup on the plate\n", not its advantage line
    obs = make_obs(3)
    policy._model_inputs(obs)  # the plain prompts fit
    with pytest.raises(CfgrlError, match="does not fit the policy's max_token_len 32: cutting it would cut its advantage text"):
        policy._model_inputs(obs, labels(Label.OPTIMAL, 3))


def test_prefix_dropout_drops_the_task_text_of_null_rows_only_never_state_or_advantage_text():
    policy = text_policy("pi05", use_prefix_dropout=True)
    o = torch.tensor([int(Label.OPTIMAL), int(Label.NULL)])
    inputs = policy._model_inputs(make_obs(2), o)
    _, pad, _ = policy.model.embed_prefix(inputs, policy.model._language_drop(o, plain=False))
    kept = pad[:, -inputs.lang_tokens.shape[1]:]
    assert torch.equal(kept[0], inputs.lang_masks[0])  # o = 1: task, state and advantage text all seen
    assert torch.equal(kept[1], inputs.lang_masks[1] & ~inputs.task_masks[1])  # ∅: only its task text dropped
