"""Bad input: one clear line, exit status 2, nothing already written is touched."""

import shutil

import pandas as pd
from typer.testing import CliRunner

from cfgrl.cli import app
from train_helpers import run_train, write_store

runner = CliRunner()


def _train(*args: str):
    result = runner.invoke(app, ["train", *args, "-o", "train.steps=2", "-o", "train.batch_size=8"])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result.exit_code, lines


def test_label_version_of_other_stores(small_run_inputs, tmp_path):
    _, labels = small_run_inputs
    other = write_store(tmp_path / "other.zarr", episodes=4, offset=50)
    code, lines = _train(str(other), "--labels", str(labels), "--out", str(tmp_path / "run"))
    assert code == 2 and len(lines) == 1 and "fingerprint" in lines[0] and "relabel" in lines[0]
    assert not (tmp_path / "run").exists()


def test_empty_label_index(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    empty = tmp_path / "empty"
    shutil.copytree(labels, empty)
    table = pd.read_parquet(empty / "windows.parquet")
    table.iloc[:0].to_parquet(empty / "windows.parquet", index=False)
    code, lines = _train(str(store), "--labels", str(empty), "--out", str(tmp_path / "run"))
    assert code == 2 and len(lines) == 1 and "has no window" in lines[0]


def test_unknown_preset(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "-o", "policy.preset=huge")
    assert code == 2 and len(lines) == 1 and "unknown policy preset 'huge'" in lines[0] and "tiny" in lines[0]


def test_checkpoint_that_is_not_a_policy(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    (tmp_path / "notapolicy").mkdir()
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "--policy", str(tmp_path / "notapolicy"))
    assert code == 2 and len(lines) == 1 and "is not a policy checkpoint" in lines[0]


def test_unknown_objective_and_bad_batch(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "--objective", "ppo")
    assert code == 2 and len(lines) == 1 and "train.objective 'ppo' is not valid" in lines[0]
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "-o", "train.grad_accum=3")
    assert code == 2 and len(lines) == 1 and "divisible" in lines[0]


def test_existing_run_is_never_overwritten_and_resume_needs_a_checkpoint(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "fresh"), "--resume")
    assert code == 2 and len(lines) == 1 and "no checkpoint yet" in lines[0]
    run_train(tmp_path / "run", [store], labels, "train.steps=2")
    before = (tmp_path / "run" / "last").resolve()
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"))
    assert code == 2 and len(lines) == 1 and "--resume" in lines[0]
    assert (tmp_path / "run" / "last").resolve() == before
    # A resumed run keeps its saved configuration and says which given settings it ignores.
    result = runner.invoke(app, ["train", str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "--resume",
                                 "-o", "train.steps=2", "-o", "train.batch_size=8", "-o", "train.lr=0.5"])
    assert result.exit_code == 0, result.output
    assert "ignored: " in result.output and "train.lr=0.5" in result.output


def test_fine_tune_keeps_checkpoint_stats_and_reports_a_mismatch(small_run_inputs, tmp_path):
    from cfgrl.policy import NormStats, PI0Policy

    store, labels = small_run_inputs
    base = PI0Policy.from_pretrained(run_train(tmp_path / "base", [store], labels, "train.steps=1"))
    s = base.stats
    base.set_stats(NormStats(s.state_mean, s.state_std, s.action_mean + 3.0, s.action_std))
    base.save_pretrained(tmp_path / "shifted")
    result = runner.invoke(app, ["train", str(store), "--labels", str(labels), "--out", str(tmp_path / "ft"),
                                 "--policy", str(tmp_path / "shifted"), "-o", "train.steps=1", "-o", "train.batch_size=8"])
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if "normalisation stats differ" in line]
    assert "action_mean: checkpoint [" in warning and "vs stores [" in warning
    kept = PI0Policy.from_pretrained(tmp_path / "ft" / "policy").stats
    assert (kept.action_mean == s.action_mean + 3.0).all()
    result = runner.invoke(app, ["train", str(store), "--labels", str(labels), "--out", str(tmp_path / "ft2"),
                                 "--policy", str(tmp_path / "shifted"), "--stats", "store", "-o", "train.steps=1",
                                 "-o", "train.batch_size=8"])
    assert result.exit_code == 0, result.output
    assert (PI0Policy.from_pretrained(tmp_path / "ft2" / "policy").stats.action_mean == s.action_mean).all()


def test_tasks_a_policy_cannot_tell_apart(small_run_inputs, tmp_path):
    """The stores' prompts ("reach target 0" and "reach target 1") cut to 8 tokens are one prompt."""
    store, labels = small_run_inputs
    code, lines = _train(str(store), "--labels", str(labels), "--out", str(tmp_path / "run"), "-o", "policy.max_token_len=8")
    assert code == 2 and len(lines) == 1 and "'reach target 0' and 'reach target 1' have the same prompt" in lines[0]
    assert not (tmp_path / "run").exists()
