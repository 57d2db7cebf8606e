"""Windows of the policy's chunk length, end to end: `cfgrl label` (the pipeline's stage) cuts windows
of the chunk of the policy that will train on them, training uses them, the trained policy samples
chunks of that length; a label index of another window length is refused before anything is written."""

import numpy as np
import pytest
import torch

from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.label import load_label_index
from cfgrl.pipeline import stages
from cfgrl.policy import PI0Policy
from train_helpers import CAMERAS, run_train, write_store

LENGTH = 20  # windows start every 5 steps: 0, 5, 10, 15


@pytest.mark.parametrize("preset, chunk", [("tiny", 10), ("tiny", 50), ("pi05_tiny", 10)])
def test_windows_training_and_sampling_use_the_policy_chunk(tmp_path, preset, chunk):
    store = write_store(tmp_path / "s.zarr", episodes=4, length=LENGTH)
    setting = [f"policy.preset={preset}", *([f"policy.chunk_size={chunk}"] if chunk != 50 else [])]  # 50: the presets' own chunk
    labels = stages.label(load_config(None, setting), [store], tmp_path / "labels")
    index = load_label_index(labels)
    assert index.manifest["horizon"] == chunk
    windows = index.windows
    np.testing.assert_array_equal(windows.num_valid, np.minimum(chunk, LENGTH - windows.start))

    final = run_train(tmp_path / "run", [store], labels, "train.steps=2", "train.batch_size=4", *setting)
    policy = PI0Policy.from_pretrained(final)
    assert policy.config.chunk_size == chunk and policy.config.family == ("pi05" if preset == "pi05_tiny" else "pi0")
    obs = {"images": {cam: torch.zeros(2, 16, 16, 3, dtype=torch.uint8) for cam in CAMERAS},
           "state": torch.zeros(2, 8), "prompt": "reach target 0"}
    assert policy.sample_actions(obs, cfg_scale=2.0).shape == (2, chunk, 7)


def test_a_label_index_of_another_window_length_is_refused(tmp_path):
    store = write_store(tmp_path / "s.zarr", episodes=4, length=LENGTH)
    labels = stages.label(load_config(None), [store], tmp_path / "labels")  # 50-action windows
    with pytest.raises(CfgrlError, match=r"windows of 50 actions, the policy's chunk is 10; label again"):
        run_train(tmp_path / "run", [store], labels, "train.steps=2", "policy.chunk_size=10")
    assert not (tmp_path / "run").exists()


def test_label_windows_follow_a_checkpoint_chunk(tmp_path):
    """`cfgrl label --policy DIR` (here the stage given the checkpoint) reads the checkpoint's chunk."""
    store = write_store(tmp_path / "s.zarr", episodes=4, length=LENGTH)
    labels = stages.label(load_config(None, ["policy.chunk_size=10"]), [store], tmp_path / "labels")
    start = run_train(tmp_path / "run", [store], labels, "train.steps=1", "train.batch_size=4", "policy.chunk_size=10")
    again = stages.label(load_config(None), [store], tmp_path / "labels2", start)
    assert load_label_index(again).manifest["horizon"] == 10


def test_max_token_len_makes_room_for_the_text_conditions_advantage_line(tmp_path):
    """A checkpoint whose prompts are too short for "…\\nAdvantage: positive" is refused in one line;
    policy.max_token_len lengthens them when fine-tuning it (the byte tokenizer's ids need no new weights)."""
    store = write_store(tmp_path / "s.zarr", episodes=4, length=LENGTH)
    bc = stages.label(load_config(None, ["cfgrl.label_source=none"]), [store], tmp_path / "labels")  # a BC base
    labels = stages.label(load_config(None), [store], tmp_path / "labels")
    short = run_train(tmp_path / "base", [store], bc, "train.steps=1", "train.batch_size=4", "policy.max_token_len=16")
    text = ["train.steps=1", "train.batch_size=4", f"policy.path={short}", "policy.condition_mode=text"]
    with pytest.raises(CfgrlError, match="would cut its advantage text"):
        run_train(tmp_path / "cut", [store], labels, *text)
    final = run_train(tmp_path / "text", [store], labels, *text, "policy.max_token_len=40")
    assert PI0Policy.from_pretrained(final).config.max_token_len == 40
