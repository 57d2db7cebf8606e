"""The Zarr rollout store: round trip, commit protocol, truncation of uncommitted rows, schema check,
one writer per store (any command), atomic creation and crashes at fixed fault points, broken metadata."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from cfgrl.errors import CfgrlError
from cfgrl.store import FAULT_ENV, EpisodeData, Store, StoreLayout, StoreWriter, episode_bytes, episode_frames, open_stores

LAYOUT = StoreLayout(("agentview", "wrist"), (8, 8, 3), 8, 7)


def make_episode(length: int, seed: int, success: bool = True, image_size: int = 8) -> EpisodeData:
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
        frames={cam: rng.integers(0, 255, size=(len(query), image_size, image_size, 3), dtype=np.uint8)
                for cam in LAYOUT.camera_names},
        frame_step=query,
        meta=dict(num_wait_steps=0, task_id=seed % 3, init_state_id=seed, group_id=seed // 2, rollout_index=seed % 2,
                  seed=seed, success=success, cfg_scale=1.0, env="builtin", suite="reach", prompt=f"task {seed}",
                  policy_id="p", run_id="r", renderer="numpy", init_config="[]"),
    )


def test_round_trip_field_by_field(tmp_path):
    episodes = [make_episode(12 + i, i, success=i % 2 == 0) for i in range(5)]
    with StoreWriter(tmp_path / "s.zarr", LAYOUT, commit_seconds=0) as writer:
        for i, ep in enumerate(episodes):
            writer.append(ep)
            assert Store(tmp_path / "s.zarr").num_episodes == i + 1  # commit_seconds=0: every append commits
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


# -- one writer per store ------------------------------------------------------------------------

def _cli(*args: str):
    from typer.testing import CliRunner

    from cfgrl.cli import app

    return CliRunner().invoke(app, list(args))


def _one_line(result, *parts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert all(part in lines[0] for part in parts), lines[0]


LAYOUT16 = StoreLayout(("agentview", "wrist"), (16, 16, 3), 8, 7)  # the builtin env's at env.image_size=16
ENV16 = ["env.image_size=16", "env.tasks=[0]", "env.init_states=[4]", "evaluate.validation_init_states=[5]",
         "evaluate.cfg_scales=[1]"]


def _tiny_policy(path):
    """A real tiny checkpoint for the builtin env at 16 px (evaluate loads it before opening the store)."""
    from cfgrl.policy import NormStats, PI0Config, PI0Policy

    config = PI0Config.from_preset("tiny", image_size=16, patch_size=8, max_token_len=32, num_steps=1)
    return PI0Policy(config, stats=NormStats.identity(8, 7)).save_pretrained(path)


def test_a_second_writer_fails_whatever_the_command_and_names_the_holder(tmp_path):
    from cfgrl.config import load_config
    from cfgrl.evaluate import evaluate_policy

    path = tmp_path / "s.zarr"
    holder = StoreWriter(path, LAYOUT16)  # what collect and evaluate open
    held = f"is being written by process {os.getpid()}"
    with pytest.raises(CfgrlError, match=held):
        StoreWriter(path, LAYOUT16)
    assert (tmp_path / "s.zarr.lock").read_text() == f"{os.getpid()}\n"
    _one_line(_cli("collect", str(path), "--policy", "scripted:0.1", "--episodes", "2", "-o", "env.image_size=16"),
              held, "one writer per store")
    with pytest.raises(CfgrlError, match=held):
        evaluate_policy(load_config(None, ENV16, environ={}), _tiny_policy(tmp_path / "policy"), tmp_path / "run",
                        store=path, progress=False)
    holder.append(make_episode(5, 0, image_size=16))
    holder.close()
    with StoreWriter(path, LAYOUT16) as writer:  # closing released the lock
        writer.append(make_episode(5, 1, image_size=16))
    assert Store(path).num_episodes == 2


def test_evaluate_holds_the_lock_while_it_rolls_out(tmp_path, monkeypatch):
    """Two `evaluate --store` runs wrote duplicate rows: the store must stay locked from the store
    read that skips recorded episodes to the last write, not only while one batch writes."""
    from cfgrl.config import load_config
    from cfgrl.evaluate import evaluate_policy, rollouts

    path = tmp_path / "eval.zarr"
    probes = []

    def run_episodes(*args, **kwargs):
        try:
            StoreWriter(path, LAYOUT16).close()
            probes.append("opened")
        except CfgrlError as err:
            probes.append(str(err))
        raise KeyboardInterrupt  # stop here, as a crash would

    monkeypatch.setattr(rollouts, "load_checkpoint", lambda *a: type("Policy", (), {"policy_id": "p"})())
    monkeypatch.setattr(rollouts, "run_episodes", run_episodes)
    with pytest.raises(KeyboardInterrupt):
        evaluate_policy(load_config(None, ENV16, environ={}), _tiny_policy(tmp_path / "policy"), tmp_path / "run",
                        store=path, progress=False)
    assert len(probes) == 1 and f"being written by process {os.getpid()}" in probes[0]
    StoreWriter(path, LAYOUT16).close()  # released when the run ended


# -- atomic creation, crashes --------------------------------------------------------------------

CREATE = ("import sys; from cfgrl.store import StoreLayout, StoreWriter; "
          "StoreWriter(sys.argv[1], StoreLayout(('agentview', 'wrist'), (8, 8, 3), 8, 7))")


@pytest.mark.parametrize("point", ["store.locked", "store.creating", "store.created_tmp", "store.renamed"])
def test_a_writer_killed_while_creating_leaves_no_store_or_a_whole_one(tmp_path, point):
    path = tmp_path / "s.zarr"
    proc = subprocess.run([sys.executable, "-c", CREATE, str(path)], env={**os.environ, FAULT_ENV: point},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if point == "store.renamed":
        assert Store(path).num_episodes == 0
        assert _cli("inspect", str(path)).exit_code == 0
    else:
        assert not path.exists()
        _one_line(_cli("inspect", str(path)), "does not exist")
    with StoreWriter(path, LAYOUT) as writer:  # the lock died with the process; the next writer goes on
        writer.append(make_episode(5, 0))
    assert Store(path).num_episodes == 1
    assert not (tmp_path / ".tmp-s.zarr").exists()


def test_a_commit_killed_before_it_counts_leaves_the_committed_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    script = CREATE.replace("StoreWriter(sys.argv[1]", "w = StoreWriter(sys.argv[1]") + (
        "; from test_store import make_episode; [w.append(make_episode(6, i)) for i in range(3)]; w.flush()"
        "; w.append(make_episode(7, 3)); w.flush()")
    env = {**os.environ, FAULT_ENV: "store.appended@2", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = Store(path)
    assert store.num_episodes == 3 and store.steps("action").shape[0] == 3 * 6 + 7  # the 4th: written, not counted
    with StoreWriter(path, LAYOUT) as writer:
        writer.append(make_episode(4, 9))
    store = Store(path)
    assert store.episodes.length.tolist() == [6, 6, 6, 4] and store.steps("action").shape[0] == 22
    np.testing.assert_array_equal(store.episode_steps(3, "action"), make_episode(4, 9).action)


def test_a_failed_commit_is_overwritten_by_the_next(tmp_path, monkeypatch):
    import cfgrl.store.writer

    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, LAYOUT, commit_seconds=1e9)
    writer.append(make_episode(5, 0))
    writer.flush()
    real_write, failures = cfgrl.store.writer._write_rows, []

    async def disk_full_once(arr, start, values):  # one array fails; the others are written
        if arr.path == "frames/wrist" and not failures:
            failures.append(start)
            raise OSError("No space left on device")
        await real_write(arr, start, values)

    monkeypatch.setattr(cfgrl.store.writer, "_write_rows", disk_full_once)
    writer.append(make_episode(6, 1))
    with pytest.raises(OSError, match="No space"):
        writer.flush()
    assert Store(path).num_episodes == 1 and Store(path).steps("action").shape[0] == 11  # rows written, not counted
    writer.append(make_episode(7, 2))
    writer.close()
    store = Store(path)
    assert store.episodes.length.tolist() == [5, 7] and store.steps("action").shape[0] == 12
    np.testing.assert_array_equal(store.episode_steps(1, "action"), make_episode(7, 2).action)
    row = store.episodes.iloc[1]
    np.testing.assert_array_equal(store.frames("wrist")[row.frame_start : row.frame_start + row.frame_count],
                                  make_episode(7, 2).frames["wrist"])


def test_commits_go_by_time_since_the_last_commit(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT, commit_seconds=1.0) as writer:
        writer.append(make_episode(5, 0))
        writer.append(make_episode(5, 1))
        assert Store(path).num_episodes == 0  # buffered: the last commit (opening) is younger than 1 s
        time.sleep(1.05)
        writer.append(make_episode(5, 2))
        assert Store(path).num_episodes == 3
        writer.append(make_episode(5, 3))
        assert Store(path).num_episodes == 3
    assert Store(path).num_episodes == 4  # closing commits the rest


def test_the_buffer_is_committed_before_it_outgrows_its_bound(tmp_path, monkeypatch):
    import cfgrl.store.writer

    episode = make_episode(5, 0)
    monkeypatch.setattr(cfgrl.store.writer, "FLUSH_BYTES", int(1.5 * episode_bytes(episode)))
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT, commit_seconds=1e9) as writer:
        for i in range(3):
            writer.append(make_episode(5, i))
        assert Store(path).num_episodes == 2  # the 2nd append committed the 1st, the 3rd the 2nd
    assert Store(path).num_episodes == 3


# -- broken metadata: one line naming the file ----------------------------------------------------

def _damage(path, what: str) -> str:
    """Break one metadata file of the store at ``path``; return the file's path as the message names it."""
    if what == "truncated root":
        meta = path / "zarr.json"
        meta.write_bytes(meta.read_bytes()[:40])
    elif what == "root attribute missing":
        meta = path / "zarr.json"
        doc = json.loads(meta.read_text())
        del doc["attributes"]["image_shape"]
        meta.write_text(json.dumps(doc))
    elif what == "no cfgrl attributes":
        meta = path / "zarr.json"
        meta.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    else:  # an episode column's metadata
        meta = path / "episodes" / "length" / "zarr.json"
        meta.write_bytes(meta.read_bytes()[:50])
    return str(meta)


@pytest.mark.parametrize("what", ["truncated root", "root attribute missing", "no cfgrl attributes", "truncated array"])
def test_broken_metadata_is_one_line_naming_the_file(tmp_path, what):
    path = tmp_path / "s.zarr"
    with StoreWriter(path, LAYOUT) as writer:
        for i in range(4):
            writer.append(make_episode(10, i, success=i % 2 == 0))
    meta = _damage(path, what)
    with pytest.raises(CfgrlError, match="restore the store from a copy") as err:
        Store(path).episodes
    assert meta in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CfgrlError, match="restore the store from a copy"):
        StoreWriter(path, LAYOUT)
    _one_line(_cli("inspect", str(path)), meta)
    _one_line(_cli("label", str(path)), meta)
    assert not (tmp_path / "s.labels").exists()


def test_episode_frames_lists_each_episodes_rows_in_order():
    # Episode 1 stored no frame; episode 2's frames do not follow episode 0's (rows 3-4 belong to no episode).
    episode, rows = episode_frames(np.array([0, 3, 5]), np.array([3, 0, 2]))
    assert episode.tolist() == [0, 0, 0, 2, 2]
    assert rows.tolist() == [0, 1, 2, 5, 6]
    assert episode.dtype == rows.dtype == np.int64
