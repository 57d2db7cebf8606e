"""Input preparation: resize with padding, prompt tokenisation, normalisation stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfgrl.errors import CfgrlError
from cfgrl.policy import NormStats
from cfgrl.policy.images import prepare_images, resize_with_pad
from cfgrl.policy.tokenizer import BOS_ID, PAD_ID, ByteTokenizer, make_tokenizer, pi0_prompt


def test_resize_with_pad_keeps_aspect_and_centres():
    white = torch.ones(1, 3, 20, 40)
    out = resize_with_pad(white, 32)
    assert out.shape == (1, 3, 32, 32)
    rows = out[0, 0].mean(dim=1)
    assert torch.all(rows[:8] == 0) and torch.all(rows[24:] == 0) and torch.allclose(rows[8:24], torch.ones(16))
    same = torch.rand(2, 3, 32, 32)
    assert resize_with_pad(same, 32) is same


def test_prepare_images_scales_to_minus_one_one_and_masks_missing_cameras():
    images = {"a": torch.full((2, 10, 10, 3), 255, dtype=torch.uint8)}
    pixels, masks = prepare_images(images, ("a", "b"), 16, 2, torch.device("cpu"))
    assert torch.all(pixels[0] == 1.0) and torch.all(pixels[1] == -1.0)
    assert masks[0].all() and not masks[1].any()


def test_byte_tokenizer_pads_truncates_and_round_trips(tmp_path):
    tok = ByteTokenizer(max_len=8)
    with pytest.warns(UserWarning, match="a prompt of 15 tokens is cut to the policy's max_token_len 8"):
        ids, mask, task = tok([pi0_prompt("hi"), pi0_prompt("a long prompt")])
    assert ids[0].tolist() == [BOS_ID, ord("h") + 3, ord("i") + 3, ord("\n") + 3, PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert mask[0].tolist() == [True] * 4 + [False] * 4 and mask[1].all()
    assert task[0].tolist() == [False, True, True] + [False] * 5  # PI0's task: the prompt without BOS and newline
    tok.save(tmp_path)
    again = make_tokenizer("byte", 8, tmp_path)
    assert again.max_len == 8 and torch.equal(again([pi0_prompt("hi")])[0], tok([pi0_prompt("hi")])[0])
    assert make_tokenizer("byte", 99, tmp_path).max_len == 99  # the policy config's length wins (policy.max_token_len)


def test_a_cut_task_is_warned_about_once_per_tokenizer():
    tok = ByteTokenizer(max_len=8)
    with pytest.warns(UserWarning, match="'a long prompt'") as caught:  # its filter is "always", as after a reset
        for _ in range(3):
            tok([pi0_prompt("a long prompt"), pi0_prompt("a long prompt")])
    assert len([w for w in caught if "is cut" in str(w.message)]) == 1
    with pytest.warns(UserWarning, match="'another long one'"):
        tok([pi0_prompt("another long one")])


def test_missing_sentencepiece_model_is_a_clear_error(tmp_path):
    with pytest.raises(CfgrlError, match="--tokenizer PATH"):
        make_tokenizer("sentencepiece", 48, tmp_path)
    with pytest.raises(CfgrlError, match="does not exist"):
        make_tokenizer("sentencepiece", 48, tmp_path, tmp_path / "nope.model")


def test_norm_stats_guard_constant_dims_and_round_trip(tmp_path):
    stats = NormStats(np.zeros(2), np.array([1e-9, 2.0]), np.ones(1), np.array([0.0]))
    np.testing.assert_array_equal(NormStats.safe_std(stats.state_std), [1.0, 2.0])
    stats.save(tmp_path / "s.json")
    again = NormStats.load(tmp_path / "s.json")
    np.testing.assert_array_equal(again.state_std, stats.state_std)
    with pytest.raises(CfgrlError, match="NaN"):
        NormStats(np.zeros(2), np.array([np.nan, 1.0]), np.ones(1), np.ones(1))
    with pytest.raises(CfgrlError, match="dims 2/1"):
        stats.check_dims(8, 7)


def test_quantile_stats_map_q01_to_minus_one_and_q99_to_plus_one(tmp_path):
    from policy_helpers import make_config

    from cfgrl.policy import PI0Policy

    rng = np.random.default_rng(0)
    q01 = {"state": rng.normal(size=8), "action": rng.normal(size=7)}
    q99 = {name: lo + rng.uniform(0.5, 3.0, size=lo.shape) for name, lo in q01.items()}
    stats = NormStats(kind="quantile", state_q01=q01["state"], state_q99=q99["state"], action_q01=q01["action"], action_q99=q99["action"])
    policy = PI0Policy(make_config(), stats=stats)
    obs = {"images": {}, "prompt": "x", "state": torch.tensor(np.stack([q01["state"], q99["state"]]), dtype=torch.float32)}
    state = policy._model_inputs(obs).state[:, :8]
    torch.testing.assert_close(state, torch.tensor([[-1.0] * 8, [1.0] * 8]), rtol=0, atol=1e-5)
    offset, scale = stats.affine("action")
    np.testing.assert_allclose(offset - scale, q01["action"])
    np.testing.assert_allclose(offset + scale, q99["action"])
    # the kind is saved and read back; mean/std stats keep the version-1 file (and so the ids of saved policies)
    stats.save(tmp_path / "q.json")
    again = NormStats.load(tmp_path / "q.json")
    assert again.kind == "quantile" and again.to_dict() == stats.to_dict() and stats.to_dict()["schema_version"] == 2
    assert NormStats.identity(2, 1).to_dict() == {"schema_version": 1, "state_mean": [0.0, 0.0], "state_std": [1.0, 1.0],
                                                   "action_mean": [0.0], "action_std": [1.0]}


def test_a_quantile_range_of_zero_width_is_one_clear_error():
    with pytest.raises(CfgrlError, match=r"q01\.\.q99 range of action dim\(s\) 1 has zero .*policy.normalization=mean_std"):
        NormStats(kind="quantile", state_q01=np.zeros(2), state_q99=np.ones(2), action_q01=np.zeros(2), action_q99=np.array([1.0, 0.0]))
    with pytest.raises(CfgrlError, match="lack state_q99"):
        NormStats(kind="quantile", state_q01=np.zeros(2), action_q01=np.zeros(2), action_q99=np.ones(2))
