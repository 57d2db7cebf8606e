"""`cfgrl value`: RECAP's targets by hand, a model that fits known returns, cross-fitting, the output
directory, and one clear line on bad input (the value stage reuses the label tests' small stores)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.store import StoreLayout
from cfgrl.value import fit
from cfgrl.value.output import ValueOutput
from cfgrl.value.targets import Returns

from label_stores import Ep, sparse, write_store

runner = CliRunner()


def value(*args):
    return runner.invoke(app, ["value", *map(str, args)])


def returns_of(store, max_length, penalty):
    reward = store.read_steps("reward").astype(np.float64)
    return Returns.of(str(store.path), store.episodes, reward, dict.fromkeys(store.episodes["suite"], max_length), penalty)


def test_recap_targets_hand_computed(make_store):
    store = make_store([
        Ep(sparse(4, True), group=0),  # r = -1, -1, -1, 0
        Ep(sparse(3, False), group=0),  # r = -1, -1, -0.5 * 10
        Ep(sparse(6, True), group=1, wait=2),  # r = 0, 0 (wait), -1, -1, -1, 0
        Ep(sparse(10, False), group=1),  # a timeout: nine -1, then -5
    ])
    r = returns_of(store, 10, 0.5)
    ep = lambda e, n: (np.full(n, e), np.arange(n))  # noqa: E731
    np.testing.assert_allclose(r.target(*ep(0, 4)), [-0.3, -0.2, -0.1, 0.0])
    np.testing.assert_allclose(r.target(*ep(1, 3)), [-0.7, -0.6, -0.5])
    np.testing.assert_allclose(r.target(*ep(2, 6)), [-0.3, -0.3, -0.3, -0.2, -0.1, 0.0])
    np.testing.assert_allclose(r.target(*ep(3, 10))[[0, 4, 5, 9]], [-1.0, -1.0, -0.9, -0.5])  # -1.4 and -1.0 clipped
    total, running = r.n_step(np.array([0, 0, 1]), np.array([0, 2, 0]), 2)
    np.testing.assert_allclose(total, [-0.2, -0.1, -0.2])
    assert running.tolist() == [True, False, True]
    np.testing.assert_allclose(returns_of(store, 10, 1.0).target(*ep(1, 3)), [-1.0, -1.0, -1.0])  # the default penalty


def test_targets_refuse_a_store_without_success_rewards_or_longer_episodes(make_store):
    unrewarded = make_store([Ep([0.0] * 6, group=0, success=True), Ep(sparse(6, False), group=0)], "bare")
    with pytest.raises(CfgrlError, match="episode 0 is marked successful but its last step has reward 0"):
        returns_of(unrewarded, 10, 1.0)
    with pytest.raises(CfgrlError, match="episode 0 has 6 policy steps, more than the task's maximum length L=5"):
        returns_of(unrewarded, 5, 1.0)


def split_store(path, episodes=8):
    """Task 0 always succeeds (after 9 to 23 steps), task 1 always fails: returns a model can learn."""
    return write_store(path, [Ep(sparse(9 + 2 * i, i % 2 == 0), group=i % 2, task=i % 2) for i in range(episodes)])


def test_value_command_writes_a_versioned_output_that_fits_known_returns(tmp_path):
    store = split_store(tmp_path / "s.zarr", 12)
    result = value(store.path, "--out", tmp_path / "v", "-o", "value.steps=80", "-o", "value.lr=3e-3")
    assert result.exit_code == 0, result.output
    assert "wrote value model" in result.output and "held-out MAE" in result.output
    out = ValueOutput.read(tmp_path / "v")
    m = out.manifest
    assert m["schema"] == "cfgrl.value" and m["schema_version"] == 1 and len(m["id"]) == 12
    assert m["env"] == "builtin" and m["camera_names"] == ["agentview", "wrist"] and m["max_length"] == {"reach": 50}
    assert m["stores"] == [{"path": str(store.path.absolute()), "fingerprint": store.fingerprint(), "episodes": 12,
                            "frames": store.num_frames}]
    assert {p.name for p in (tmp_path / "v").iterdir()} == {"manifest.json", "values.parquet", "train_log.jsonl",
                                                            "calibration.png", "model_fold0.safetensors", "model_fold1.safetensors"}
    log = [json.loads(line) for line in (tmp_path / "v" / "train_log.jsonl").read_text().splitlines()]
    assert {(r["fold"], "held_out_mae" in r) for r in log} == {(0, False), (0, True), (1, False), (1, True)}
    table = out.table
    assert table.frame.tolist() == list(range(store.num_frames))  # every stored frame, once
    np.testing.assert_allclose(table.target, returns_of(store, 50, 1.0).target(table.episode.to_numpy(), table.step.to_numpy()),
                               atol=1e-6)
    assert sorted(table.groupby("episode").fold.first().value_counts().tolist()) == [6, 6]
    # held out, the failing task is worth about -1 and the succeeding one about -(steps left) / 50
    assert np.abs(table.value - table.target).mean() < 0.1
    assert m["metrics"]["held_out_mae"] == pytest.approx(np.abs(table.value - table.target).mean(), rel=1e-5)


def test_cross_fitting_never_values_an_episode_with_a_model_that_saw_it(tmp_path, monkeypatch):
    stores = [split_store(tmp_path / "a.zarr", 6), split_store(tmp_path / "b.zarr", 5)]
    seen, valued = [], []
    train, predict = fit.train_fold, fit.predict

    def keys(frames, rows):
        return set(zip(frames.store[rows].tolist(), frames.episode[rows].tolist()))

    def spy_train(frames, rows, *args, **kwargs):
        model = train(frames, rows, *args, **kwargs)
        seen.append((model, keys(frames, rows)))
        return model

    def spy_predict(model, frames, rows, *args):
        valued.append((model, keys(frames, rows), rows))
        return predict(model, frames, rows, *args)

    monkeypatch.setattr(fit, "train_fold", spy_train)
    monkeypatch.setattr(fit, "predict", spy_predict)
    cfg = load_config(None, ["value.steps=2"], environ={})
    out = fit.fit_values(stores, cfg, tmp_path / "v")
    assert len(seen) == len(valued) == 2
    for (trained_model, trained), (model, predicted, _) in zip(seen, valued):
        assert model is trained_model and trained and predicted and not trained & predicted
    assert sorted(np.concatenate([rows for _, _, rows in valued]).tolist()) == list(range(len(out.table)))
    folds = out.table.groupby(["store", "episode"]).fold.first().reset_index()
    for s in (0, 1):  # each store's episodes are split in two
        assert set(folds[folds.store == s].fold) == {0, 1}


@pytest.mark.parametrize("case", ["out exists", "cameras differ", "one episode", "no success reward", "same store twice"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    good = split_store(tmp_path / "s.zarr", 4)
    args = [good.path]
    if case == "out exists":
        (tmp_path / "v").mkdir()
    elif case == "cameras differ":
        other = tmp_path / "o.zarr"
        from cfgrl.store import StoreWriter
        from label_stores import episode_data

        layout = StoreLayout(("agentview",), (4, 4, 3), 8, 7)
        with StoreWriter(other, layout) as writer:
            for i in range(2):
                data = episode_data(Ep(sparse(9, i == 0), group=0), i)
                data.frames = {"agentview": data.frames["agentview"]}
                writer.append(data)
        args.append(other)
    elif case == "one episode":
        args = [write_store(tmp_path / "one.zarr", [Ep(sparse(9, True), group=0)]).path]
    elif case == "no success reward":
        args = [write_store(tmp_path / "bare.zarr", [Ep([0.0] * 9, group=0, success=True), Ep(sparse(9, False), group=0)]).path]
    else:
        args.append(good.path)
    message = {"out exists": "already exists; a value model's output is never overwritten",
               "cameras differ": "differ in env, cameras or dimensions",
               "one episode": "needs at least 2", "no success reward": "is marked successful but its last step has reward 0",
               "same store twice": "the same store is given twice"}[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = value(*args, "--out", tmp_path / "v", "-o", "value.steps=1")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left


def test_values_are_the_held_out_predictions_of_the_saved_models(tmp_path):
    """The saved safetensors are the models that produced the values (V of a fold = the other fold's model)."""
    import torch
    from safetensors.torch import load_file

    store = split_store(tmp_path / "s.zarr", 4)
    cfg = load_config(None, ["value.steps=3"], environ={})
    out = fit.fit_values([store], cfg, tmp_path / "v")
    m = out.manifest
    frames = fit.load_frames([store], cfg, [tuple(t) for t in m["tasks"]], m["max_length"])
    for fold in (0, 1):
        model = fit.ValueNet(2, 4, 8, len(m["tasks"]))
        model.load_state_dict(load_file(str(tmp_path / "v" / f"model_fold{fold}.safetensors")))
        rows = np.flatnonzero(frames.fold != fold)
        values, _ = fit.predict(model.eval(), frames, rows, torch.device("cpu"))
        np.testing.assert_allclose(values, out.table.value.to_numpy()[rows], atol=1e-6)
