"""Guided sampling: the branches, the guidance mix, the prefix cache and the untrained-condition rule."""

from __future__ import annotations

import pytest
import torch

from cfgrl.errors import CfgrlError
from cfgrl.optimality import Label
from policy_helpers import FAMILIES, count_sampling_passes, make_noise, make_obs, make_policy, perturb_condition


def manual_euler(policy, obs, noise, weight_of):
    """Uncached reference: full prefix+suffix forward per step; weight_of(v_cond, v_null) mixes them."""
    inputs = policy._model_inputs(obs)
    batch = noise.shape[0]
    steps = policy.config.num_steps
    x, time = noise.clone(), torch.tensor(1.0)
    with torch.no_grad():
        for _ in range(steps):
            t = time.expand(batch)
            v_cond = policy.model.velocity(inputs, x, t, o=torch.full((batch,), Label.OPTIMAL))
            v_null = policy.model.velocity(inputs, x, t, o=torch.full((batch,), Label.NULL))
            x = x - weight_of(v_cond, v_null) / steps
            time = time - 1.0 / steps
    actions = x[:, :, : policy.config.action_dim]
    return actions * policy._norm_on("action_std") + policy._norm_on("action_mean")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
@pytest.mark.parametrize("mode", ["token", "bias", "concat"])
def test_guided_sampling_matches_the_uncached_reference(mode, prefix_dropout, family):
    policy = make_policy(family=family, condition_mode=mode, use_prefix_dropout=prefix_dropout, num_steps=3)
    perturb_condition(policy)
    policy.condition_trained = True
    obs, noise = make_obs(2), make_noise(2)
    cases = {1.0: lambda c, n: c, 0.0: lambda c, n: n, 2.5: lambda c, n: n + 2.5 * (c - n)}
    results = {}
    for w, mix in cases.items():
        results[w] = policy.sample_actions(obs, cfg_scale=w, noise=noise)
        torch.testing.assert_close(results[w], manual_euler(policy, obs, noise, mix), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(results[1.0], results[0.0], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix_dropout", [False, True])
def test_guidance_is_one_batched_suffix_pass_per_step_with_images_encoded_once(family, prefix_dropout):
    policy = make_policy(family=family, use_prefix_dropout=prefix_dropout, num_steps=4)
    policy.condition_trained = True
    calls = count_sampling_passes(policy, cfg_scale=2.5)
    assert calls["images"] == 1
    assert calls["prefix"] == [6 if prefix_dropout else 3]  # two prefixes (one batch) only when they differ
    assert calls["suffix"] == [6] * 4  # both branches in one pass per Euler step


def test_same_noise_gives_the_same_actions_and_shapes(policy):
    obs = make_obs(3, size=(64, 48))
    a = policy.sample_actions(obs, noise=make_noise(3))
    assert a.shape == (3, 50, 7) and a.dtype == torch.float32
    assert torch.equal(a, policy.sample_actions(obs, noise=make_noise(3)))
    assert not torch.equal(a, policy.sample_actions(obs, noise=make_noise(3, seed=1)))


def test_untrained_condition_samples_the_base_policy_whatever_w():
    policy = make_policy(condition_mode="bias", use_prefix_dropout=True)
    perturb_condition(policy)
    obs, noise = make_obs(2), make_noise(2)
    inputs = policy._model_inputs(obs)
    with torch.no_grad():
        base = policy.model.sample_actions(inputs, noise=noise, plain=True)[:, :, :7]
    base = base * policy._norm_on("action_std") + policy._norm_on("action_mean")
    assert not policy.condition_trained
    for w in (0.0, 1.0, 3.0):
        assert torch.equal(policy.sample_actions(obs, cfg_scale=w, noise=noise), base)
    policy.condition_trained = True
    assert not torch.allclose(policy.sample_actions(obs, cfg_scale=3.0, noise=noise), base, atol=1e-4)


def test_missing_camera_is_masked_out(policy):
    obs = make_obs(2)
    only_agentview = {**obs, "images": {"agentview": obs["images"]["agentview"]}}
    changed = {**obs, "images": {"agentview": obs["images"]["agentview"], "wrist": 255 - obs["images"]["wrist"]}}
    a = policy.sample_actions(only_agentview, noise=make_noise(2))
    assert torch.isfinite(a).all()
    assert not torch.allclose(policy.sample_actions(obs, noise=make_noise(2)), policy.sample_actions(changed, noise=make_noise(2)))


@pytest.mark.parametrize("w", [-0.5, float("nan"), float("inf")])
def test_bad_cfg_scale_is_a_clear_error(policy, w):
    with pytest.raises(CfgrlError, match="cfg_scale must be a finite number >= 0"):
        policy.sample_actions(make_obs(1), cfg_scale=w)


def test_bad_observations_are_clear_errors(policy):
    obs = make_obs(2)
    with pytest.raises(CfgrlError, match="unknown camera"):
        policy.sample_actions({**obs, "images": {**obs["images"], "top": obs["images"]["wrist"]}})
    with pytest.raises(CfgrlError, match="uint8"):
        policy.sample_actions({**obs, "images": {k: v.float() for k, v in obs["images"].items()}})
    with pytest.raises(CfgrlError, match="state must have shape"):
        policy.sample_actions({**obs, "state": torch.zeros(2, 5)})
    with pytest.raises(CfgrlError, match="noise must have shape"):
        policy.sample_actions(obs, noise=torch.zeros(2, 50, 7))
    with pytest.raises(CfgrlError, match="num_steps must be at least 1"):
        policy.sample_actions(obs, num_steps=0)
