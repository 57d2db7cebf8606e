"""The input side: the memory-mapped cache against direct store reads, its rebuild rules, batches
and their split over processes, streaming statistics."""

import pickle
import shutil

import numpy as np
import pytest

from cfgrl.config import load_config
from cfgrl.errors import CfgrlError
from cfgrl.label import load_label_index
from cfgrl.policy import NormStats
from cfgrl.store import Store
from cfgrl.train.cache import ensure_cache
from cfgrl.train.data import ResumableBatchSampler, WindowBatches, make_loader
from cfgrl.train.setup import build_policy
from cfgrl.train.stats import mismatch_report, store_stats
from train_helpers import WAIT_ACTION, initial_policy, label, write_store


def test_cache_matches_direct_store_reads(tmp_path, small_run_inputs):
    store_path, labels = small_run_inputs
    store, windows = Store(store_path), load_label_index(labels).windows
    cache = ensure_cache(tmp_path / "cache", [store], windows, 50)
    assert len(cache) == len(windows) and cache.images["wrist"].dtype == np.uint8
    actions, states = np.asarray(store.steps("action")[:]), np.asarray(store.steps("state")[:])
    for i in (0, 3, len(windows) - 1):
        w = windows.iloc[i]
        first = int(store.episodes.step_start[w.episode]) + int(w.start)
        np.testing.assert_array_equal(cache.state[i], states[first])
        np.testing.assert_array_equal(cache.actions[i, : w.num_valid], actions[first : first + w.num_valid])
        assert not cache.actions[i, w.num_valid :].any()
        np.testing.assert_array_equal(cache.images["agentview"][i], store.frames("agentview")[int(w.frame)])
        assert cache.prompts[cache.prompt[i]] == store.episodes.prompt[w.episode]
    dataset = WindowBatches(cache)
    batch = dataset[[5, 1]]
    assert batch["index"].tolist() == [1, 5]
    np.testing.assert_array_equal(batch["action_is_pad"][0], np.arange(50) >= windows.num_valid[1])
    shipped = pickle.dumps(dataset)  # what a spawned loader worker receives: a path, not the arrays
    assert len(shipped) < 2000
    np.testing.assert_array_equal(pickle.loads(shipped)[[5, 1]]["images"]["wrist"], batch["images"]["wrist"])


def test_loader_workers_deliver_the_same_batches(small_run_inputs, tmp_path):
    store_path, labels = small_run_inputs
    cache = ensure_cache(tmp_path / "cache", [Store(store_path)], load_label_index(labels).windows, 50)
    delivered = []
    for workers in (0, 2):
        sampler = ResumableBatchSampler(len(cache), 8, 1, 0, seed=1)
        sampler.set_position(1, 1)
        loader = make_loader(WindowBatches(cache), sampler, workers, pin_memory=False)
        delivered.append([(b["index"].tolist(), b["images"]["agentview"].sum().item()) for b in loader])
    assert delivered[0] == delivered[1] and len(delivered[0]) == len(cache) // 8 - 1


def test_cache_is_reused_and_rebuilt_when_store_or_windows_change(tmp_path):
    store_path = write_store(tmp_path / "s.zarr", episodes=4)
    windows = load_label_index(label([store_path])).windows
    (tmp_path / "cache" / "not-ours").mkdir(parents=True)  # train.cache_dir may be a shared directory
    first = ensure_cache(tmp_path / "cache", [Store(store_path)], windows, 50)
    again = ensure_cache(tmp_path / "cache", [Store(store_path)], windows, 50)
    assert again.path == first.path
    fewer = ensure_cache(tmp_path / "cache", [Store(store_path)], windows.iloc[::2].reset_index(drop=True), 50)
    assert fewer.path != first.path and len(fewer) == (len(windows) + 1) // 2
    write_store(store_path, episodes=4, offset=4)  # appends 4 episodes: another fingerprint
    grown = ensure_cache(tmp_path / "cache", [Store(store_path)], windows, 50)
    assert grown.path not in (first.path, fewer.path)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([grown.path.name, "not-ours"])  # stale caches removed, nothing else


def test_a_store_with_lost_or_damaged_frames_or_a_damaged_cache_is_refused(tmp_path, small_run_inputs):
    """Zarr reads a missing chunk as black frames: the cache is never built from them."""
    source, labels = small_run_inputs
    windows = load_label_index(labels).windows
    for damage, message in ((lambda chunk: chunk.unlink(), "frames/wrist lacks 1 of the"),
                            (lambda chunk: chunk.write_bytes(b"not zstd" * 8), "frames/wrist rows 0-")):
        path = tmp_path / "s.zarr"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(source, path)
        damage(path / "frames" / "wrist" / "c" / "0" / "0" / "0" / "0")
        with pytest.raises(CfgrlError, match=message) as info:
            ensure_cache(tmp_path / "cache", [Store(path)], windows, 50)
        assert f"store '{path}'" in str(info.value) and "recollect" in str(info.value)
        assert not any((tmp_path / "cache").glob("*/meta.json"))  # nothing half-built is left to train on
    cache = ensure_cache(tmp_path / "cache", [Store(source)], windows, 50)
    (cache.path / "images_wrist.npy").unlink()
    with pytest.raises(CfgrlError, match=r"training cache '.*' is damaged \(images_wrist.npy: .*delete that directory"):
        ensure_cache(tmp_path / "cache", [Store(source)], windows, 50)


def test_two_processes_see_the_global_batches_of_one():
    one = ResumableBatchSampler(37, 8, 1, 0, seed=3)
    ranks = [ResumableBatchSampler(37, 4, 2, r, seed=3) for r in (0, 1)]
    for sampler in (one, *ranks):
        sampler.set_position(epoch=2, skip_batches=0)
    for single, half0, half1 in zip(one, *ranks):
        assert sorted(single) == sorted(half0 + half1)
    one.set_position(epoch=2, skip_batches=3)  # resuming mid-epoch skips exactly the consumed batches
    full = ResumableBatchSampler(37, 8, 1, 0, seed=3)
    full.set_position(2, 0)
    assert list(one) == list(full)[3:]


def test_streaming_stats_and_mismatch_report(tmp_path):
    store = Store(write_store(tmp_path / "s.zarr", episodes=3))
    stats = store_stats([store])
    actions = np.asarray(store.steps("action")[:], np.float64)
    np.testing.assert_allclose(stats.action_mean, actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.action_std, actions.std(0), rtol=1e-5)
    shifted = type(stats)(stats.state_mean, stats.state_std, stats.action_mean + 5.0, stats.action_std)
    lines = mismatch_report(shifted, stats)
    assert len(lines) == 1 and lines[0].startswith("action_mean: checkpoint [") and "vs stores [" in lines[0]
    assert mismatch_report(stats, stats) == []


def test_near_constant_dimension_gets_unit_std(tmp_path):
    path = write_store(tmp_path / "s.zarr", episodes=2)
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    state = np.asarray(root["steps/state"][:])
    state[:, 3] = 0.25
    root["steps/state"][:] = state
    stats = store_stats([Store(path)])
    assert stats.state_std[3] == 1.0 and stats.state_mean[3] == np.float32(0.25)
    assert (stats.state_std[np.arange(8) != 3] != 1.0).all()


def test_stats_come_from_the_steps_a_window_can_hold(tmp_path):
    store = Store(write_store(tmp_path / "s.zarr", episodes=4, wait=6))
    n = store.num_steps
    action, state = (np.asarray(store.steps(name)[:n], dtype=np.float64) for name in ("action", "state"))
    wait = np.asarray(store.steps("is_wait")[:n])
    assert wait.sum() == 4 * 6 and (action[wait] == WAIT_ACTION).all()
    stats = store_stats([store])  # LIBERO's wait steps hold the "do nothing" action, and no window
    np.testing.assert_allclose(stats.action_mean, action[~wait].mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.action_std, action[~wait].std(0), rtol=1e-5)
    np.testing.assert_allclose(stats.state_mean, state[~wait].mean(0), rtol=1e-6, atol=1e-7)


def test_a_checkpoint_keeps_the_stats_it_carries_and_one_without_gets_the_stores(small_run_inputs, tmp_path):
    store, _ = small_run_inputs
    policy = initial_policy([store])
    computed = policy.stats
    policy.set_stats(NormStats.identity(8, 7))  # identity values, but carried: they are the checkpoint's stats
    policy.save_pretrained(tmp_path / "identity")
    policy.set_stats(None)
    policy.save_pretrained(tmp_path / "none")
    cfg, notes = load_config(None, []), []
    kept = build_policy(cfg, [Store(store)], tmp_path / "identity", notes.append)
    assert (kept.stats.action_mean == 0).all() and (kept.stats.action_std == 1).all()
    assert any("normalisation stats differ, kept the checkpoint's" in note for note in notes)
    notes.clear()
    filled = build_policy(cfg, [Store(store)], tmp_path / "none", notes.append)
    np.testing.assert_array_equal(filled.stats.action_mean, computed.action_mean)
    assert notes[-1] == "mean_std normalisation stats computed from the stores (the checkpoint carries none)"


def test_quantile_stats_from_the_stores_are_exact(tmp_path):
    store = Store(write_store(tmp_path / "s.zarr", episodes=4, wait=3))
    n = store.num_steps
    keep = ~np.asarray(store.steps("is_wait")[:n])
    stats = store_stats([store], "quantile")
    assert stats.kind == "quantile"
    for name in ("state", "action"):
        values = np.asarray(store.steps(name)[:n], np.float32)[keep]
        lo, hi = np.quantile(values, [0.01, 0.99], axis=0)
        np.testing.assert_array_equal(getattr(stats, f"{name}_q01"), lo.astype(np.float32))
        np.testing.assert_array_equal(getattr(stats, f"{name}_q99"), hi.astype(np.float32))
    shifted = NormStats(kind="quantile", state_q01=stats.state_q01, state_q99=stats.state_q99,
                        action_q01=stats.action_q01 - 1.0, action_q99=stats.action_q99)
    (line,) = mismatch_report(shifted, stats)
    assert line.startswith("action_q01: checkpoint [")


def test_quantile_training_keeps_its_kind_and_a_constant_dimension_is_refused(tmp_path):
    import zarr

    path = write_store(tmp_path / "s.zarr", episodes=2)
    stores = [Store(path)]
    fresh = build_policy(load_config(None, ["policy.normalization=quantile"]), stores, None, lambda _: None)
    assert fresh.stats.kind == "quantile"
    fresh.save_pretrained(tmp_path / "q")
    notes = []
    again = build_policy(load_config(None, ["train.stats=store"]), stores, tmp_path / "q", notes.append)  # default mean_std
    assert again.stats.kind == "quantile" and notes[-1].startswith("quantile normalisation stats computed")
    root = zarr.open_group(str(path), mode="r+")  # the episodes' state is constant per episode: make dim 3 constant overall
    state = np.asarray(root["steps/state"][:])
    state[:, 3] = 0.25
    root["steps/state"][:] = state
    with pytest.raises(CfgrlError, match=r"range of state dim\(s\) 3 has zero"):
        store_stats([Store(path)], "quantile")


def test_a_lerobot_checkpoint_without_stats_trains_with_stats_from_the_stores(small_run_inputs, tmp_path):
    """As lerobot's pi05_base ships: no stats file; the stores give them, of policy.normalization's kind."""
    from cfgrl.policy.checkpoint import carries_stats, export_lerobot

    store, _ = small_run_inputs
    policy = initial_policy([store])
    policy.set_stats(None)
    exported = export_lerobot(policy, tmp_path / "lerobot")
    assert not carries_stats(exported)
    notes = []
    loaded = build_policy(load_config(None, ["train.stats=store", "policy.normalization=quantile"]), [Store(store)], exported, notes.append)
    assert loaded.stats.kind == "quantile"
    assert notes[-1] == "quantile normalisation stats computed from the stores (train.stats=store)"


def test_an_openpi_checkpoint_without_norm_stats_takes_the_stores_dims(small_run_inputs, tmp_path):
    """openpi records the robot's dims only in its norm stats: without them train gives the stores'."""
    import json

    from safetensors.torch import load_file, save_file

    from cfgrl.policy.checkpoint import export_lerobot

    store, _ = small_run_inputs
    policy = initial_policy([store])
    policy.set_stats(None)
    exported = export_lerobot(policy, tmp_path / "lerobot")
    openpi = tmp_path / "openpi"
    (openpi / "assets").mkdir(parents=True)  # copied without norm stats
    weights = {k[len("model."):]: v for k, v in load_file(str(exported / "model.safetensors")).items()}
    save_file(weights, str(openpi / "model.safetensors"))
    (openpi / "cfgrl_sizes.json").write_text((exported / "cfgrl_sizes.json").read_text())  # the tiny sizes
    (openpi / "config.json").write_text(json.dumps({"action_dim": 32, "action_horizon": 50, "paligemma_variant": "gemma_2b",
                                                    "action_expert_variant": "gemma_300m", "precision": "float32"}))
    # it loads (state/action dims 8/7 from the stores); openpi's camera names then differ from the stores'
    with pytest.raises(CfgrlError, match=r"has no camera agentview, wrist \(it uses base_0_rgb"):
        build_policy(load_config(None, []), [Store(store)], openpi, lambda _: None)
    # policy.camera_map lets openpi's cameras read the stores'; its third camera, absent, is masked
    mapped = load_config(None, ["policy.camera_map=[base_0_rgb=agentview, left_wrist_0_rgb=wrist]"])
    policy = build_policy(mapped, [Store(store)], openpi, lambda _: None)
    assert policy.config.camera_names == ("agentview", "wrist", "right_wrist_0_rgb")
