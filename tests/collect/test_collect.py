"""`cfgrl collect` / `cfgrl inspect` end to end on the builtin env: real stores, real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import EnvConfig
from cfgrl.envs import make_env
from cfgrl.envs.builtin import NUM_INIT_STATES
from cfgrl.envs.scripted import policy_id
from cfgrl.rollout.specs import group_specs
from cfgrl.store import FAULT_ENV, Store

ENV = ["-o", "env.image_size=32", "-o", "env.max_steps=30"]


def cfgrl(*args: str, check: bool = True):
    """The real command line, in-process (fast); the SIGKILL test runs it as a separate process."""
    result = CliRunner().invoke(app, list(args))
    if check and result.exit_code != 0:
        raise AssertionError(f"cfgrl {' '.join(args)} failed ({result.exit_code}):\n{result.stdout}\n{result.stderr}\n{result.exception}")
    return result


def replay(task: int, init: int, seed: int, noise: float, max_steps: int, replan: int = 5):
    """The episode recomputed in-process from the env and the scripted expert."""
    env = make_env(EnvConfig(image_size=32, max_steps=max_steps))
    obs = env.reset(task, init, seed)
    states, actions, rewards, frames, frame_steps = [], [], [], [], []
    for t in range(max_steps):
        if t % replan == 0:
            frames.append(obs.images)
            frame_steps.append(t)
            chunk = env.scripted_chunk(noise)
        action = np.clip(chunk[t % replan], -1, 1)
        result = env.step(action, render=(t % replan == replan - 1))
        states.append(obs.state)
        actions.append(action)
        rewards.append(result.reward)
        obs = result.obs
        if result.success:
            break
    return np.array(states), np.array(actions), np.array(rewards), frames, frame_steps


@pytest.mark.slow
def test_collect_writes_every_field_as_the_env_produced_it(tmp_path):
    store_path = tmp_path / "reach.zarr"
    out = cfgrl("collect", str(store_path), "--policy", "scripted:0.4", "--episodes", "5", "--workers", "2",
                "-o", "collect.group_size=3", *ENV)
    assert "2 groups x K=3" in out.stdout and "collected 6 episodes" in out.stdout
    split = next(line for line in out.stdout.splitlines() if line.startswith("collector time: "))
    for part in ("policy", "storing episodes", "pipes", "waiting for environments"):
        assert f"{part} " in split
    store = Store(store_path)
    ep = store.episodes.sort_values(["group_id", "rollout_index"])
    expected = group_specs([0, 1, 2, 3], list(range(NUM_INIT_STATES)), 2, 3, 0)
    assert [(s.group_id, s.rollout_index, s.seed, s.task_id, s.init_state_id) for s in expected] == list(
        zip(ep.group_id, ep.rollout_index, ep.seed, ep.task_id, ep.init_state_id))
    assert set(ep.policy_id) == {policy_id(0.4)} and ep.run_id.nunique() == 1
    assert set(ep.env) == {"builtin"} and set(ep.suite) == {"reach"} and set(ep.renderer) == {"numpy"}
    assert set(ep.init_config) == {"[]"}  # the builtin init state id alone fixes the scene
    assert (ep.num_wait_steps == 0).all() and (ep.cfg_scale == 1.0).all()
    per_task = ", ".join(f"task {t} {int(g.success.sum())}/{len(g)} ({g.success.mean():.0%})" for t, g in ep.groupby("task_id"))
    assert ep.task_id.nunique() > 1 and f"success per task: {per_task}" in out.stdout
    for i, row in ep.iterrows():
        states, actions, rewards, frames, frame_steps = replay(row.task_id, row.init_state_id, row.seed, 0.4, 30)
        np.testing.assert_array_equal(store.episode_steps(i, "state"), states)
        np.testing.assert_array_equal(store.episode_steps(i, "action"), actions.astype(np.float32))
        np.testing.assert_array_equal(store.episode_steps(i, "reward"), rewards.astype(np.float32))
        done = store.episode_steps(i, "done")
        assert bool(row.success) == bool(done[-1]) == (rewards[-1] == 1.0) and not done[:-1].any()
        assert not store.episode_steps(i, "is_wait").any()
        rows = slice(row.frame_start, row.frame_start + row.frame_count)
        np.testing.assert_array_equal(store.frame_steps()[rows], frame_steps)
        for cam in ("agentview", "wrist"):
            np.testing.assert_array_equal(store.frames(cam)[rows], np.stack([f[cam] for f in frames]))
        assert row.prompt == make_env(EnvConfig()).tasks()[row.task_id].prompt

    summary = cfgrl("inspect", str(store_path)).stdout
    assert "episodes: 6" in summary and "schema: cfgrl.store version 2" in summary
    assert "'grasp the top left ball'" in summary and policy_id(0.4) in summary and "MiB" in summary


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_reaches_the_count_without_duplicates(tmp_path):
    store_path = tmp_path / "killed.zarr"
    args = ["collect", str(store_path), "--policy", "scripted:0.5", "--episodes", "80", "--workers", "2",
            "-o", "collect.group_size=4", "-o", "collect.commit_seconds=0", *ENV]
    # Killed at a fixed point mid-run (a commit after every episode): the second commit's rows are
    # written, num_episodes not yet bumped.
    proc = subprocess.Popen([sys.executable, "-m", "cfgrl.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, FAULT_ENV: "store.appended@2"})
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        _kill_group(proc.pid)  # its environment workers, orphaned
    assert proc.returncode == -signal.SIGKILL, stderr
    killed = Store(store_path)
    assert 0 < killed.num_episodes < 80
    ep = killed.episodes
    # Only whole episodes: contiguous step ranges, each ending where the next starts.
    assert (ep.step_start.to_numpy() == np.concatenate([[0], np.cumsum(ep.length)[:-1]])).all()
    assert killed.steps("action").shape[0] > killed.num_steps  # the uncommitted rows trail: ignored
    done, frame_steps = np.asarray(killed.steps("done")[: killed.num_steps]), killed.frame_steps()
    for row in ep.itertuples():
        assert done[row.step_start + row.length - 1] == row.success
        assert not done[row.step_start : row.step_start + row.length - 1].any()
        rows = slice(row.frame_start, row.frame_start + row.frame_count)
        np.testing.assert_array_equal(frame_steps[rows], np.arange(0, row.length, 5))

    cfgrl(*args)  # the same command resumes
    resumed = Store(store_path).episodes
    pairs = list(zip(resumed.group_id, resumed.rollout_index))
    assert len(pairs) == 80 and len(set(pairs)) == 80
    assert set(pairs) == {(g, k) for g in range(20) for k in range(4)}

    # Resumed episodes are the ones an uninterrupted run produces.
    fresh_path = tmp_path / "fresh.zarr"
    cfgrl("collect", str(fresh_path), "--policy", "scripted:0.5", "--episodes", "80", "-o", "collect.group_size=4", *ENV)
    key = ["group_id", "rollout_index", "seed", "length", "success", "run_id"]
    a = resumed[key].sort_values(key[:2]).reset_index(drop=True)
    b = Store(fresh_path).episodes[key].sort_values(key[:2]).reset_index(drop=True)
    assert a.equals(b)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_two_collects_racing_to_create_a_store_one_wins_the_other_names_it(tmp_path):
    """Both start with a fault point that pauses the creator once its temporary store is built: the
    one that took the lock pauses there, the other fails at once with the lock line naming the
    winner's pid (whichever wins). Killing the winner leaves no store, and the command resumes."""
    store_path = tmp_path / "raced.zarr"
    args = ["collect", str(store_path), "--policy", "scripted:0.1", "--episodes", "2", "--workers", "1",
            "-o", "collect.group_size=2", *ENV]
    env = {**os.environ, FAULT_ENV: "store.created_tmp:sleep"}
    procs = [subprocess.Popen([sys.executable, "-m", "cfgrl.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env, start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 300
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        loser, winner = sorted(procs, key=lambda p: p.poll() is None)
        assert loser.returncode == 2 and winner.poll() is None
        lines = loser.stderr.read().strip().splitlines()
        assert len(lines) == 1 and f"is being written by process {winner.pid} " in lines[0], lines
        assert f"cfgrl fault point store.created_tmp reached (pid {winner.pid})" in winner.stderr.readline()
        assert not store_path.exists() and (tmp_path / ".tmp-raced.zarr").is_dir()
    finally:
        for proc in procs:
            _kill_group(proc.pid)
            proc.wait()
            proc.stderr.close()
    assert not store_path.exists()
    cfgrl(*args)  # the winner's SIGKILL released the lock; its leftover is replaced
    assert Store(store_path).num_episodes == 2 and not (tmp_path / ".tmp-raced.zarr").exists()


def _actions_by_episode(path: Path) -> dict[tuple[int, int], np.ndarray]:
    store = Store(path)
    actions = np.asarray(store.steps("action")[: store.num_steps])
    return {(int(r.group_id), int(r.rollout_index)): actions[r.step_start : r.step_start + r.length]
            for r in store.episodes.itertuples()}


def test_resumed_collection_is_within_1e6_and_an_uninterrupted_rerun_is_bit_identical(tmp_path):
    """The README's guarantee: a policy's actions depend on the batch it was sampled in only in the
    last float bits (within 1e-6), so a resumed run (other batches) matches an uninterrupted one
    within 1e-6; the same uninterrupted command twice is bit-identical."""
    common = ["--workers", "2", "-o", "collect.group_size=2", "-o", "env.image_size=32", "-o", "env.max_steps=10",
              "-o", "inference.num_steps=2", "-o", "inference.cfg_scale=1.5"]
    for name in ("a.zarr", "b.zarr"):
        cfgrl("collect", str(tmp_path / name), "--episodes", "6", *common)
    cfgrl("collect", str(tmp_path / "resumed.zarr"), "--episodes", "2", *common)  # interrupted after one group
    cfgrl("collect", str(tmp_path / "resumed.zarr"), "--episodes", "6", *common)
    a, b, resumed = (_actions_by_episode(tmp_path / n) for n in ("a.zarr", "b.zarr", "resumed.zarr"))
    assert a.keys() == b.keys() == resumed.keys() and len(a) == 6
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_allclose(resumed[key], a[key], rtol=0, atol=1e-6)


def test_shards_split_whole_groups_and_merge_to_the_full_grid():
    full = group_specs([0, 1, 2, 3], list(range(50)), 10, 3, 7)
    shards = [group_specs([0, 1, 2, 3], list(range(50)), 10, 3, 7, shard=i, num_shards=3) for i in range(3)]
    def by_id(specs):
        return sorted(specs, key=lambda s: (s.group_id, s.rollout_index))

    assert by_id(s for shard in shards for s in shard) == by_id(full)
    for shard in shards:
        groups = {s.group_id for s in shard}
        assert all(sum(s.group_id == g for s in shard) == 3 for g in groups)  # never inside a group
    assert len({s.seed for s in full}) == len(full)
    assert [s.task_id for s in full[::3]][:4] == [0, 1, 2, 3]  # tasks cycle fastest: prefixes are balanced


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "env.suite=nope"], "choose one of: reach"),
        (["-o", "env.tasks=[7]"], "valid task ids: 0 (grasp the top left ball)"),
        (["-o", "env.init_states=[500]"], "init states 0..499"),
        (["-o", "collect.group_size=1"], "at least 2"),
        (["--policy", "/nonexistent/ckpt"], "is not a directory"),
        (["--policy", "scripted:2"], "in [0, 1]"),
        (["--episodes", "0"], "at least 1"),
        (["--shard", "3", "--num-shards", "2"], "0 <= shard < num_shards"),
        (["-o", "collect.adaptive=true", "--num-shards", "2"], "--num-shards 2 does not go with collect.adaptive: each wave"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, extra, message):
    store_path = tmp_path / "bad.zarr"
    policy = [] if "--policy" in extra else ["--policy", "scripted:0.1"]
    proc = cfgrl("collect", str(store_path), *policy, "--episodes", "2", *extra, check=False)
    assert proc.exit_code == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert not store_path.exists()


def test_a_checkpoint_without_stats_is_refused_before_the_store_is_created(tmp_path):
    from cfgrl.policy import PI0Config, PI0Policy

    bare = PI0Policy(PI0Config.from_preset("tiny", image_size=32)).save_pretrained(tmp_path / "bare")  # no stats given
    store_path = tmp_path / "s.zarr"
    proc = cfgrl("collect", str(store_path), "--policy", str(bare), "--episodes", "2", "--workers", "1", *ENV, check=False)
    assert proc.exit_code == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"policy '{bare}' carries no normalisation stats" in proc.stderr and "--stats store" in proc.stderr
    assert not store_path.exists()


def test_other_schema_version_is_refused_and_left_untouched(tmp_path):
    store_path = tmp_path / "old.zarr"
    cfgrl("collect", str(store_path), "--policy", "scripted:0.1", "--episodes", "2", "--workers", "1", *ENV)
    meta_file = store_path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["schema_version"] = 99
    meta_file.write_text(json.dumps(meta))
    before = {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()}
    for command in (["collect", str(store_path), "--policy", "scripted:0.1", "--episodes", "4", *ENV],
                    ["inspect", str(store_path)]):
        proc = cfgrl(*command, check=False)
        assert proc.exit_code == 2 and "schema version 99" in proc.stderr and proc.stderr.count("\n") == 1
    assert before == {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()}


def test_videos_of_the_first_episodes(tmp_path):
    store_path = tmp_path / "filmed.zarr"
    proc = cfgrl("collect", str(store_path), "--policy", "scripted:0.0", "--episodes", "2", "--workers", "1",
                 "-o", "collect.videos=1", *ENV, check=False)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:  # the encoder is optional: then the run must refuse clearly, before writing
        assert proc.exit_code == 2 and "imageio-ffmpeg is not installed" in proc.stderr
        assert not store_path.exists()
        return
    assert proc.exit_code == 0, proc.stderr
    videos = sorted((tmp_path / "filmed.zarr.videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_appending_episodes_of_another_replan_steps_is_refused_and_leaves_the_store_untouched(tmp_path):
    store_path = tmp_path / "five.zarr"
    cfgrl("collect", str(store_path), "--policy", "scripted:0.1", "--episodes", "2", "--workers", "1", *ENV)
    assert Store(store_path).replan_steps() == [5]
    before = {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()}
    proc = cfgrl("collect", str(store_path), "--policy", "scripted:0.1", "--episodes", "2", "--workers", "1", *ENV,
                 "-o", "inference.replan_steps=4", check=False)
    assert proc.exit_code == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "inference.replan_steps=5 but this run's is 4" in proc.stderr and "label refuses" in proc.stderr
    assert before == {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file()}
