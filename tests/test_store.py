"""The Zarr rollout store: round trip, commit protocol, truncation of uncommitted rows, schema check."""

import numpy as np
import pytest
import zarr

from cfgrl.errors import CfgrlError
from cfgrl.store import EpisodeData, Store, StoreLayout, StoreWriter, open_stores

LAYOUT = StoreLayout(("agentview", "wrist"), (8, 8, 3), 8, 7)


def make_episode(length: int, seed: int, success: bool = True) -> EpisodeData:
    rng = np.random.default_rng(seed)
    query = np.arange(0, length, 5)
    reward = np.zeros(length, np.float32)
    done = np.zeros(length, bool)
    if success:
        reward[-1], done[-1] = 1.0, True
    return EpisodeData(
        state=rng.normal(size=(length, 8)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
        reward=reward,
        done=done,
        is_wait=np.zeros(length, bool),
        frames={cam: rng.integers(0, 255, size=(len(query), 8, 8, 3), dtype=np.uint8) for cam in LAYOUT.camera_names},
        frame_step=query,
        meta=dict(num_wait_steps=0, task_id=seed % 3, init_state_id=seed, group_id=seed // 2, rollout_index=seed % 2,
                  seed=seed, success=success, cfg_scale=1.0, env="builtin", suite="reach", prompt=f"task {seed}",
                  policy_id="p", run_id="r", renderer="numpy"),
    )


def test_round_trip_field_by_field(tmp_path):
    episodes = [make_episode(12 + i, i, success=i % 2 == 0) for i in range(5)]
    with StoreWriter(tmp_path / "s.zarr", LAYOUT, flush_every=2) as writer:
        for ep in episodes:
            writer.append(ep)
    store = Store(tmp_path / "s.zarr")
    assert store.num_episodes == 5
    for i, ep in enumerate(episodes):
        row = store.episodes.iloc[i]
        assert row.length == ep.length and row.prompt == ep.meta["prompt"] and bool(row.success) == ep.meta["success"]
        for name in ("state", "action", "reward", "done", "is_wait"):
            np.testing.assert_array_equal(store.episode_steps(i, name), getattr(ep, name))
        frames = slice(row.frame_start, row.frame_start + row.frame_count)
        np.testing.assert_array_equal(store.frames("wrist")[frames], ep.frames["wrist"])
        np.testing.assert_array_equal(store.frame_steps()[frames], ep.frame_step)


def test_every_frame_chunk_is_written_even_an_all_black_one(tmp_path):
    """zarr skips chunks equal to the fill value by default; training refuses a missing frame chunk."""
    episode = make_episode(40, 0)  # 8 frames per camera, one chunk
    episode.frames["wrist"][:] = 0
    with StoreWriter(tmp_path / "s.zarr", LAYOUT) as writer:
        writer.append(episode)
    for cam in LAYOUT.camera_names:
        assert (tmp_path / "s.zarr" / "frames" / cam / "c" / "0" / "0" / "0" / "0").is_file()
    assert not Store(tmp_path / "s.zarr").frames("wrist")[:].any()


def test_uncommitted_rows_are_invisible_and_truncated(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(10, 0))
    # A writer killed mid-flush: arrays appended, num_episodes not bumped.
    root = zarr.open_group(str(path), mode="r+")
    root["steps/action"].append(np.ones((7, 7), np.float32))
    root["episodes/length"].append(np.array([7]))
    store = Store(path)
    assert store.num_episodes == 1 and len(store.episodes) == 1 and store.num_steps == 10
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(6, 1))
    store = Store(path)
    assert store.num_episodes == 2
    assert store.episodes.step_start.tolist() == [0, 10]
    np.testing.assert_array_equal(store.episode_steps(1, "action"), make_episode(6, 1).action)


def test_other_schema_version_fails_clearly(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(5, 0))
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = 99
    with pytest.raises(CfgrlError, match="schema version 99"):
        Store(path)


def test_layout_mismatch_and_missing_store(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(5, 0))
    other = StoreLayout(("agentview",), (8, 8, 3), 8, 7)
    with pytest.raises(CfgrlError, match="write to a new store"):
        StoreWriter(path, other)
    assert Store(path).num_episodes == 1
    with pytest.raises(CfgrlError, match="does not exist"):
        open_stores([tmp_path / "nope.zarr"])


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(5, 0))
    before = Store(path).fingerprint()
    assert Store(path).fingerprint() == before
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(5, 1))
    assert Store(path).fingerprint() != before
