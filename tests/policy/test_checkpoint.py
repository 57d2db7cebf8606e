"""Checkpoints: our format round trip and identity, lerobot's layouts in and out, the export command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.errors import CfgrlError
from cfgrl.evaluate.rollouts import check_policy_dir
from cfgrl.optimality import Label
from cfgrl.policy import NormStats, PI0Policy
from policy_helpers import FAMILIES, make_batch, train_sentencepiece, make_noise, make_obs, make_policy, perturb_condition


def outputs(policy, w=2.0):
    with torch.no_grad():
        return (policy.sample_actions(make_obs(2), cfg_scale=w, noise=make_noise(2)),
                policy.compute_loss(make_batch(2, o=[Label.OPTIMAL, Label.NULL]), noise=make_noise(2), time=torch.tensor([0.3, 0.7])))


def test_save_load_round_trip_is_identical(tmp_path):
    policy = make_policy(condition_mode="concat")
    perturb_condition(policy)
    policy.condition_trained = True
    path = policy.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "stats.json", "tokenizer.json"]
    loaded = PI0Policy.from_pretrained(path).eval()
    assert loaded.policy_id == policy.policy_id and loaded.condition_trained
    assert loaded.config == policy.config
    np.testing.assert_array_equal(loaded.stats.action_std, policy.stats.action_std)
    for a, b in zip(outputs(policy), outputs(loaded)):
        assert torch.equal(a, b)


def test_policy_id_follows_the_content(tmp_path):
    policy = make_policy()
    first = policy.policy_id
    assert policy.policy_id == first == make_policy().policy_id
    with torch.no_grad():
        policy.model.action_out_proj.bias.add_(1.0)
    assert policy.policy_id != first
    second = policy.policy_id
    policy.condition_trained = True
    assert policy.policy_id != second


def test_untrained_checkpoint_ignores_w(tmp_path):
    policy = make_policy()
    loaded = PI0Policy.from_pretrained(policy.save_pretrained(tmp_path / "base"))
    assert not loaded.condition_trained
    actions = [loaded.sample_actions(make_obs(2), cfg_scale=w, noise=make_noise(2)) for w in (0.0, 1.0, 5.0)]
    assert torch.equal(actions[0], actions[1]) and torch.equal(actions[0], actions[2])


def test_tampered_or_foreign_checkpoints_fail_clearly(tmp_path):
    path = make_policy().save_pretrained(tmp_path / "ckpt")
    weights = load_file(str(path / "model.safetensors"))
    weights["state_proj.bias"] += 1
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CfgrlError, match="differs from the recorded policy id"):
        PI0Policy.from_pretrained(path)
    meta = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(CfgrlError, match="cfgrl.policy schema version 99; this cfgrl reads version 1"):
        PI0Policy.from_pretrained(path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(CfgrlError, match="neither a cfgrl policy nor a lerobot pi0 / pi05 or openpi checkpoint"):
        PI0Policy.from_pretrained(tmp_path / "other")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(CfgrlError, match="refusing to overwrite"):
        make_policy().save_pretrained(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_config_carries_the_policy_schema_and_checkpoints_from_before_it_still_load(tmp_path):
    policy = make_policy()
    path = policy.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((path / "config.json").read_text())
    assert (meta["schema"], meta["schema_version"]) == ("cfgrl.policy", 1) and "format" not in meta
    # config.json as cfgrl wrote it before the schema stamp: a "format" marker instead of the schema name
    legacy = {"format": "cfgrl-pi0-policy", **{k: v for k, v in meta.items() if k != "schema"}}
    (path / "config.json").write_text(json.dumps(legacy))
    loaded = PI0Policy.from_pretrained(path)
    assert loaded.policy_id == policy.policy_id and check_policy_dir(path, "policy") == path
    (path / "config.json").write_text(json.dumps({**legacy, "schema_version": 2}))
    with pytest.raises(CfgrlError, match="cfgrl.policy schema version 2; this cfgrl reads version 1"):
        PI0Policy.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**meta, "schema": "cfgrl.store"}))
    with pytest.raises(CfgrlError, match="neither a cfgrl policy nor a lerobot pi0 / pi05 or openpi checkpoint"):
        PI0Policy.from_pretrained(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CfgrlError, match="not a policy checkpoint's config"):
        PI0Policy.from_pretrained(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_to_lerobot_and_back(tmp_path, family):
    policy = make_policy(family=family)
    out = tmp_path / "lerobot"
    result = CliRunner().invoke(app, ["export", str(policy.save_pretrained(tmp_path / "ours")), str(out), "--lerobot"])
    assert result.exit_code == 0, result.output
    assert f"lerobot's {family} layout" in result.output
    meta = json.loads((out / "config.json").read_text())
    assert meta["type"] == family and meta["input_features"]["observation.state"]["shape"] == [8]
    assert json.loads((out / "cfgrl_sizes.json").read_text())["expert_width"] == policy.config.expert_width
    keys = load_file(str(out / "model.safetensors")).keys()
    assert "model.paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.weight" in keys
    assert "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
    assert f"model.paligemma_with_expert.gemma_expert.model.norm.{'dense.' if family == 'pi05' else ''}weight" in keys
    assert not any("condition" in k for k in keys)
    loaded = PI0Policy.from_pretrained(out).eval()
    assert loaded.config == policy.config
    assert any("initialised new condition parameters (token): condition.tokens" in n for n in loaded.load_report)
    np.testing.assert_allclose(loaded.stats.state_mean, policy.stats.state_mean, rtol=1e-6)
    a, b = outputs(policy, w=1.0)[0], outputs(loaded, w=1.0)[0]
    torch.testing.assert_close(a, b)
    again = CliRunner().invoke(app, ["export", str(tmp_path / "ours"), str(out), "--lerobot"])
    assert again.exit_code == 2 and "already exists" in again.output
    no_format = CliRunner().invoke(app, ["export", str(tmp_path / "ours"), str(tmp_path / "new")])
    assert no_format.exit_code == 2 and "--lerobot" in no_format.output and not (tmp_path / "new").exists()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["bias", "concat"])
def test_export_of_a_trained_condition_is_the_policy_at_w1(tmp_path, mode, family):
    # under prefix dropout the w = 1 branch keeps the prompt, as lerobot's pi0 / pi05 always does
    policy = make_policy(family=family, condition_mode=mode, use_prefix_dropout=True)
    perturb_condition(policy)
    policy.condition_trained = True
    out = tmp_path / "lerobot"
    result = CliRunner().invoke(app, ["export", str(policy.save_pretrained(tmp_path / "ours")), str(out), "--lerobot"])
    assert result.exit_code == 0 and "condition folded in" in result.output, result.output
    assert not any("condition" in k for k in load_file(str(out / "model.safetensors")))
    loaded = PI0Policy.from_pretrained(out).eval()
    obs, noise = make_obs(2), make_noise(2)
    conditional = policy.sample_actions(obs, cfg_scale=1.0, noise=noise)
    torch.testing.assert_close(loaded.sample_actions(obs, noise=noise), conditional, rtol=0, atol=1e-5)
    policy.condition_trained = False  # the plain network, which an export without the fold would be
    assert not torch.allclose(policy.sample_actions(obs, noise=noise), conditional, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["token", "text"])
def test_export_refuses_a_trained_token_or_text_condition(tmp_path, family, mode):
    policy = make_policy(family=family, condition_mode=mode)
    perturb_condition(policy)
    policy.condition_trained = True
    out = tmp_path / "lerobot"
    result = CliRunner().invoke(app, ["export", str(policy.save_pretrained(tmp_path / "ours")), str(out), "--lerobot"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{mode}-mode condition" in lines[0] and "condition_mode=bias or concat" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours"]  # nothing written


def test_export_refuses_a_pi05_that_never_sees_the_state(tmp_path):
    policy = make_policy(family="pi05", discrete_state_input=False)
    out = tmp_path / "lerobot"
    result = CliRunner().invoke(app, ["export", str(policy.save_pretrained(tmp_path / "ours")), str(out), "--lerobot"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "discrete_state_input" in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours"]


def _as_older_lerobot(directory, tmp_path, classic_stats: NormStats | None = None):
    """Rewrite an exported checkpoint into the transformers < 4.52 key layout with classic normaliser buffers."""
    weights = load_file(str(directory / "model.safetensors"))
    pg = "model.paligemma_with_expert.paligemma."
    renamed = {}
    for key, value in weights.items():
        key = key.replace(pg + "model.vision_tower.", pg + "vision_tower.")
        key = key.replace(pg + "model.multi_modal_projector.", pg + "multi_modal_projector.")
        key = key.replace(pg + "model.language_model.", pg + "language_model.model.")
        key = key.replace(pg + "lm_head.", pg + "language_model.lm_head.")
        renamed[key] = value
    renamed["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.zeros(3, 4)
    if classic_stats is not None:
        for prefix, mean, std in (("normalize_inputs.buffer_observation_state", classic_stats.state_mean, classic_stats.state_std),
                                  ("normalize_targets.buffer_action", classic_stats.action_mean, classic_stats.action_std),
                                  ("unnormalize_outputs.buffer_action", classic_stats.action_mean, classic_stats.action_std)):
            renamed[f"{prefix}.mean"], renamed[f"{prefix}.std"] = torch.tensor(mean).float(), torch.tensor(std).float()
    older = tmp_path / "older"
    older.mkdir()
    for name in ("config.json", "cfgrl_sizes.json"):
        (older / name).write_text((directory / name).read_text())
    save_file(renamed, str(older / "model.safetensors"))
    return older


def test_older_lerobot_layout_with_classic_stats_loads(tmp_path):
    from cfgrl.policy.checkpoint import carries_stats, export_lerobot

    policy = make_policy()
    exported = export_lerobot(policy, tmp_path / "exported")
    stats = NormStats(np.arange(8), np.full(8, 2.0), np.arange(7), np.full(7, 3.0))
    older = _as_older_lerobot(exported, tmp_path, stats)
    assert carries_stats(older)
    loaded = PI0Policy.from_pretrained(older, condition_mode="bias")
    assert loaded.config.condition_mode == "bias"
    np.testing.assert_array_equal(loaded.stats.action_std, np.full(7, 3.0))
    assert any("classic normaliser buffers" in n for n in loaded.load_report)
    loaded.set_stats(policy.stats)
    torch.testing.assert_close(outputs(policy, w=1.0)[0], outputs(loaded.eval(), w=1.0)[0])


def test_stats_are_carried_only_when_given_in_both_formats(tmp_path):
    from cfgrl.policy.checkpoint import carries_stats, export_lerobot
    from policy_helpers import make_config

    bare = PI0Policy(make_config())  # no stats: normalises with mean 0 and std 1, and says it has none
    assert bare.stats is None
    path = bare.save_pretrained(tmp_path / "bare")
    assert not (path / "stats.json").exists() and not carries_stats(path)
    loaded = PI0Policy.from_pretrained(path)
    assert loaded.stats is None and loaded.policy_id == bare.policy_id
    given = PI0Policy(make_config(), stats=NormStats.identity(8, 7))  # identity values given are stats all the same
    assert carries_stats(given.save_pretrained(tmp_path / "given"))
    assert PI0Policy.from_pretrained(tmp_path / "given").stats is not None
    exported = export_lerobot(bare, tmp_path / "exported")
    assert not carries_stats(exported)
    loaded = PI0Policy.from_pretrained(exported)
    assert loaded.stats is None and any("no normalisation stats found" in n for n in loaded.load_report)
    assert not carries_stats(_as_older_lerobot(export_lerobot(make_policy(), tmp_path / "with"), tmp_path))
    assert carries_stats(tmp_path / "with")


def test_lerobot_checkpoint_with_wrong_keys_names_them(tmp_path):
    from cfgrl.policy.checkpoint import export_lerobot

    exported = export_lerobot(make_policy(), tmp_path / "exported")
    weights = load_file(str(exported / "model.safetensors"))
    weights["model.some_new_head.weight"] = torch.zeros(2)
    del weights["model.state_proj.bias"]
    save_file(weights, str(exported / "model.safetensors"))
    with pytest.raises(CfgrlError, match=r"missing keys: state_proj.bias; unexpected keys: model.some_new_head.weight"):
        PI0Policy.from_pretrained(exported)


def test_sentencepiece_tokenizer_is_saved_and_found_in_the_checkpoint(tmp_path):
    from cfgrl.policy.tokenizer import pi0_prompt
    from policy_helpers import make_config, make_stats

    model_file = train_sentencepiece(tmp_path)
    torch.manual_seed(0)
    policy = PI0Policy(make_config(tokenizer="sentencepiece"), stats=make_stats(), tokenizer=model_file).eval()
    ids, mask, _ = policy.tokenizer([pi0_prompt("pick up the bowl")])
    assert ids[0, 0] == 2 and mask[0].sum() > 2 and int(ids.max()) < 60
    path = policy.save_pretrained(tmp_path / "ckpt")
    assert (path / "tokenizer.model").is_file()
    loaded = PI0Policy.from_pretrained(path)
    assert torch.equal(outputs(loaded.eval())[0], outputs(policy)[0])
    (path / "tokenizer.model").unlink()
    bare = PI0Policy.from_pretrained(path)
    with pytest.raises(CfgrlError, match="needs the PaliGemma SentencePiece tokenizer"):
        bare.sample_actions(make_obs(1))
    explicit = PI0Policy.from_pretrained(path, tokenizer=model_file)
    assert torch.equal(outputs(explicit.eval())[0], outputs(policy)[0])


def test_untrained_condition_can_switch_mode_but_a_trained_one_cannot(tmp_path):
    policy = make_policy(condition_mode="token")
    policy.save_pretrained(tmp_path / "base")
    switched = PI0Policy.from_pretrained(tmp_path / "base", condition_mode="bias", use_prefix_dropout=True)
    assert switched.config.condition_mode == "bias" and switched.config.use_prefix_dropout
    assert any("new condition parameters" in note for note in switched.load_report)
    base = PI0Policy.from_pretrained(tmp_path / "base")
    for name, value in switched.model.state_dict().items():
        if not name.startswith("condition."):
            torch.testing.assert_close(value, base.model.state_dict()[name], rtol=0, atol=0)
    policy.condition_trained = True
    policy.save_pretrained(tmp_path / "trained")
    with pytest.raises(CfgrlError, match="cannot be switched"):
        PI0Policy.from_pretrained(tmp_path / "trained", condition_mode="bias")
    assert PI0Policy.from_pretrained(tmp_path / "trained", condition_mode="token").condition_trained


class _Trap:
    """Unpickling this creates a directory: the proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("damage", ["truncated", "pickle", "torch.save"])
def test_truncated_or_pickled_weights_are_refused_in_one_line_and_never_unpickled(tmp_path, damage):
    import pickle

    path = make_policy().save_pretrained(tmp_path / "ckpt")
    weights, marker = path / "model.safetensors", tmp_path / "unpickled"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps({"state_proj.bias": _Trap(marker)}))
    else:
        torch.save({"state_proj.bias": _Trap(marker)}, weights)
    with pytest.raises(CfgrlError) as info:
        PI0Policy.from_pretrained(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(weights)) and not marker.exists()
    if damage == "truncated":
        assert "is truncated or corrupt" in message and "copy the checkpoint again" in message
    else:
        assert "is a pickle (torch.save) file, not safetensors; cfgrl never unpickles" in message
