"""Training behaviour on small real stores: it learns, one mixed forward equals per-sample losses,
the labels seen match the index, BC pre-training, the baselines' objectives, and the order episodes
were stored in does not change the trained policy."""

import json
import math

import numpy as np
import torch

from cfgrl.label import load_label_index
from cfgrl.optimality import Label, from_stored
from cfgrl.policy import PI0Policy
from cfgrl.train.cache import WindowCache
from cfgrl.train.data import WindowBatches, to_device
from cfgrl.train.objectives import epoch_labels, flow_draws, objective_loss, training_rows
from train_helpers import all_windows_batch, fixed_draw_losses, initial_policy, label, run_train, write_store


def _cache(run_dir) -> WindowCache:
    (path,) = (run_dir / "cache").iterdir()
    return WindowCache.open(path)


def _records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_overfits_a_small_store_and_marks_the_condition_trained(tmp_path):
    store = write_store(tmp_path / "s.zarr", episodes=4, length=10)
    labels = label([store])
    final = run_train(tmp_path / "run", [store], labels, "train.steps=100", "train.lr=5e-3")
    o = from_stored(load_label_index(labels).windows.label)
    batch = all_windows_batch(_cache(tmp_path / "run"), o)
    trained = PI0Policy.from_pretrained(final)
    before = fixed_draw_losses(initial_policy([store]), batch).mean()
    after = fixed_draw_losses(trained, batch).mean()
    assert after < 0.5 * before, (before, after)
    assert trained.condition_trained
    steps = [r["step"] for r in _records(tmp_path / "run", "train")]
    assert steps == list(range(5, 101, 5))
    record = _records(tmp_path / "run", "train")[-1]
    for key in ("loss", "loss_1", "loss_0", "loss_null", "share_1", "share_null", "dropout_hit_rate", "lr",
                "grad_norm", "samples_per_s", "data_wait_share"):
        assert key in record
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_one_mixed_forward_equals_per_sample_losses(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    final = run_train(tmp_path / "run", [store], labels, "train.steps=2")
    policy = PI0Policy.from_pretrained(final)
    cache = _cache(tmp_path / "run")
    raw = WindowBatches(cache)[[0, 1, 2, 3, 4, 5]]
    o = np.array([Label.OPTIMAL, Label.NOT_OPTIMAL, Label.NULL, Label.OPTIMAL, Label.NULL, Label.NOT_OPTIMAL])
    batch = to_device(raw, cache.prompts, o, torch.device("cpu"))
    noise, time = flow_draws(raw["index"], 0, 0, (50, 32), torch.device("cpu"))
    loss, mixed, seen = objective_loss("cfgrl", policy, batch, torch.ones(6), 0.5, noise, time)
    assert torch.equal(seen, batch["o"]) and torch.isclose(loss, mixed.mean())
    for i in range(6):
        single = {**{k: v[i : i + 1] for k, v in batch.items() if k not in ("images", "prompt")},
                  "images": {c: v[i : i + 1] for c, v in batch["images"].items()}, "prompt": batch["prompt"][i : i + 1]}
        alone = policy.compute_loss(single, noise[i : i + 1], time[i : i + 1])
        torch.testing.assert_close(alone[0], mixed[i], rtol=1e-5, atol=1e-6)
    # the condition matters: the same windows under other labels give other losses
    other = policy.compute_loss({**batch, "o": torch.full((6,), Label.NULL)}, noise, time)
    assert not torch.allclose(other[o != Label.NULL], mixed[o != Label.NULL])


def test_weighted_baseline_is_the_two_branch_loss(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    policy = PI0Policy.from_pretrained(run_train(tmp_path / "run", [store], labels, "train.steps=1"))
    cache = _cache(tmp_path / "run")
    raw = WindowBatches(cache)[[0, 1, 2, 3]]
    batch = to_device(raw, cache.prompts, np.full(4, Label.OPTIMAL), torch.device("cpu"))
    noise, time = flow_draws(raw["index"], 0, 0, (50, 32), torch.device("cpu"))
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss, _, o = objective_loss("weighted", policy, batch, w, 0.5, noise, time)
    positive = policy.compute_loss({**batch, "o": torch.full((4,), Label.OPTIMAL)}, noise, time)
    uncond = policy.compute_loss({**batch, "o": torch.full((4,), Label.NULL)}, noise, time)
    torch.testing.assert_close(loss, (w * positive).mean() + 0.5 * uncond.mean(), rtol=1e-5, atol=1e-6)
    assert o.tolist() == [Label.OPTIMAL] * 4 + [Label.NULL] * 4


def test_filtered_bc_trains_unconditioned_on_positive_windows_only(small_run_inputs):
    _, labels = small_run_inputs
    index = load_label_index(labels)
    rows = training_rows("filtered_bc", index.windows)
    assert (index.windows.raw_label.iloc[rows] == 1).all() and len(rows) == (index.windows.raw_label == 1).sum()
    assert (epoch_labels("filtered_bc", index.windows, index.manifest, False, 0, 0).o == Label.NULL).all()


def test_optimal_repeat_lists_each_positive_window_n_times(small_run_inputs):
    _, labels = small_run_inputs
    windows = load_label_index(labels).windows
    assert training_rows("cfgrl", windows, 1) is None
    rows = training_rows("cfgrl", windows, 3)
    visits = np.bincount(rows, minlength=len(windows))
    positive = (windows.raw_label == 1).to_numpy()
    assert positive.any() and (~positive).any()
    assert (visits[positive] == 3).all() and (visits[~positive] == 1).all()


def _binomial_ok(seen_share: float, p: float, n: int) -> bool:
    return abs(seen_share - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


def test_label_shares_seen_match_the_index(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    windows = load_label_index(labels).windows
    per_epoch = len(windows) // 8
    run_train(tmp_path / "run", [store], labels, f"train.steps={2 * per_epoch + 1}")
    epochs = _records(tmp_path / "run", "epoch")
    assert len(epochs) == 2
    n = len(windows)  # (label == 1) is <NA> on null rows: count, then divide by all rows
    expected = {"1": (windows.label == 1).sum() / n, "0": (windows.label == 0).sum() / n, "null": windows.label.isna().sum() / n}
    for record in epochs:  # an epoch sees every window once, but for the < 8 windows that fill no batch
        assert sum(record[f"share_{k}"] for k in expected) == 1.0
        for name, p in expected.items():
            assert _binomial_ok(record[f"share_{name}"], p, per_epoch * 8)
            assert abs(record[f"share_{name}"] * per_epoch * 8 - p * n) <= n % 8


def test_redraw_dropout_draws_afresh_each_epoch(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    index = load_label_index(labels)
    p = index.manifest["settings"]["dropout_prob"]
    draws = [epoch_labels("cfgrl", index.windows, index.manifest, True, 0, e) for e in range(40)]
    assert any((d.o != draws[0].o).any() for d in draws[1:])
    assert all(((d.o == Label.NULL) | (d.o == from_stored(index.windows.raw_label))).all() for d in draws)
    conditioned = int(index.windows.raw_label.notna().sum())
    hits = sum(int(d.dropout_hit.sum()) for d in draws)
    assert _binomial_ok(hits / (conditioned * len(draws)), p, conditioned * len(draws))
    # and the trainer uses them: the logged hit rate over 10 epochs is within binomial bounds of p
    run_train(tmp_path / "run", [store], labels, "train.steps=40", "train.redraw_dropout=true", "train.log_every=40")
    (last,) = _records(tmp_path / "run", "train")
    assert _binomial_ok(last["dropout_hit_rate"], p, conditioned * 10)
    n = 40 * 8
    null_expected = (index.windows.raw_label.isna().sum() + p * conditioned) / len(index.windows)
    assert _binomial_ok(last["share_null"], null_expected, n)


def test_behaviour_cloning_with_label_source_none_lowers_the_loss(tmp_path):
    store = write_store(tmp_path / "s.zarr", episodes=4, length=10)
    labels = label([store], label_source="none")
    windows = load_label_index(labels).windows
    assert windows.label.isna().all()
    final = run_train(tmp_path / "run", [store], labels, "train.steps=40")
    batch = all_windows_batch(_cache(tmp_path / "run"), np.full(len(windows), Label.NULL))
    before = fixed_draw_losses(initial_policy([store]), batch).mean()
    trained = PI0Policy.from_pretrained(final)
    assert fixed_draw_losses(trained, batch).mean() < 0.7 * before
    assert not trained.condition_trained  # no conditioned label was ever seen
    records = _records(tmp_path / "run", "train")
    assert all(r["share_null"] == 1.0 for r in records)


def test_objectives_and_freezing_run_end_to_end(small_run_inputs, tmp_path):
    store, labels = small_run_inputs
    start = initial_policy([store]).state_dict()
    final = run_train(tmp_path / "expert", [store], labels, "train.steps=2", "train.train_expert_only=true",
                      "train.gradient_checkpointing=true", "train.grad_accum=2", "train.objective=weighted")
    trained = PI0Policy.from_pretrained(final).state_dict()
    vision = [k for k in start if ".vision." in k]
    expert = [k for k in start if ".expert." in k]
    assert vision and expert
    assert all(torch.equal(start[k], trained[k]) for k in vision)  # frozen
    assert any(not torch.equal(start[k], trained[k]) for k in expert)  # trained
    assert PI0Policy.from_pretrained(final).condition_trained  # the o=1 branch of the weighted loss
    final = run_train(tmp_path / "fbc", [store], labels, "train.steps=2", "train.objective=filtered_bc", "train.freeze_vision=true")
    assert not PI0Policy.from_pretrained(final).condition_trained  # unconditional only
    (record,) = _records(tmp_path / "fbc", "train")
    assert record["share_null"] == 1.0


def test_prefix_dropout_applies_only_to_runs_that_condition(small_run_inputs, tmp_path):
    """Plain behaviour cloning (no conditioned window) and filtered BC train a plain policy, which samples
    with its prompt: prefix dropout there would drop every sample's prompt, so those runs keep it."""
    store, labels = small_run_inputs
    on = "cfgrl.use_prefix_dropout=true"
    cfgrl = run_train(tmp_path / "cfgrl", [store], labels, "train.steps=1", on)
    fbc = run_train(tmp_path / "fbc", [store], labels, "train.steps=1", on, "train.objective=filtered_bc")
    bc = run_train(tmp_path / "bc", [store], label([store], label_source="none"), "train.steps=1", on)
    assert PI0Policy.from_pretrained(cfgrl).config.use_prefix_dropout
    for run, final in (("fbc", fbc), ("bc", bc)):
        assert not PI0Policy.from_pretrained(final).config.use_prefix_dropout
        assert json.loads((tmp_path / run / "config.json").read_text())["cfgrl"]["use_prefix_dropout"] is False


def test_the_order_episodes_were_stored_in_does_not_change_labels_or_weights(tmp_path):
    # Collector workers commit episodes as they finish: the same episodes, another order.
    in_order = write_store(tmp_path / "a.zarr", episodes=8, length=12)
    shuffled = write_store(tmp_path / "b.zarr", episodes=8, length=12, order=[5, 2, 7, 0, 3, 6, 1, 4])
    tables = [load_label_index(label([s])).windows for s in (in_order, shuffled)]
    same = ["start", "task_id", "group_id", "advantage", "raw_label", "label", "dropout_hit"]
    assert tables[0][same].equals(tables[1][same])
    assert not tables[0].episode.equals(tables[1].episode)  # the rows do point at other store positions
    policies = [run_train(tmp_path / f"run_{s.stem}", [s], label([s]), "train.steps=6") for s in (in_order, shuffled)]
    a, b = (PI0Policy.from_pretrained(p) for p in policies)
    assert a.policy_id == b.policy_id
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
