"""Adaptive collection (`collect.adaptive`): waves planned from a real store's outcomes, skipping and
stopping, resuming after a SIGKILL, the shard refusal (in test_collect.py) and the inspect table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cfgrl.cli import app
from cfgrl.config import CollectConfig
from cfgrl.rollout.plan import missing_specs
from cfgrl.rollout.specs import group_grid, group_specs
from cfgrl.rollout.waves import next_wave
from cfgrl.store import FAULT_ENV, EpisodeData, Store, StoreLayout, StoreWriter

TASKS, INITS, K = [0, 1], [0, 1, 2], 2
# Six (task, init state) pairs; pair c holds grid groups c, c + 6, c + 12, ...:
# 0 (t0 i0), 1 (t1 i1), 2 (t0 i1), 3 (t1 i2), 4 (t0 i2), 5 (t1 i0)
GRID = group_grid(TASKS, INITS, 30)
LAYOUT = StoreLayout(("agentview",), (4, 4, 3), 8, 7)


def add(path, groups: dict[int, list[int]], run: str = "r", rollouts: list[int] | None = None) -> pd.DataFrame:
    """Commit to a real store the given groups' outcomes (1 = success), one 1-step episode per rollout;
    ``rollouts``: only these rollout indices (a group a killed run left short). Returns the episode table."""
    with StoreWriter(path, LAYOUT, commit_seconds=1e9) as writer:
        for g, outcomes in groups.items():
            task, init = GRID[g]
            for k in rollouts or range(len(outcomes)):
                meta = dict(num_wait_steps=0, task_id=task, init_state_id=init, group_id=g, rollout_index=k, seed=0,
                            success=bool(outcomes[k]), cfg_scale=1.0, env="builtin", suite="reach", prompt=f"task {task}",
                            policy_id="p", run_id=run, renderer="numpy", init_config="[]")
                writer.append(EpisodeData(
                    state=np.zeros((1, 8), np.float32), action=np.zeros((1, 7), np.float32),
                    reward=np.array([float(outcomes[k])], np.float32), done=np.array([bool(outcomes[k])]),
                    is_wait=np.zeros(1, bool), frames={"agentview": np.zeros((1, 4, 4, 3), np.uint8)},
                    frame_step=np.zeros(1, np.int64), meta=meta))
    return Store(path).episodes


def wave(episodes: pd.DataFrame, groups: int = 100, patience: int = 2):
    return next_wave(TASKS, INITS, episodes, "r", CollectConfig(groups=groups, group_size=K, seed=7,
                                                                 adaptive=True, adaptive_patience=patience))


def planned(w) -> list[int]:
    return list(dict.fromkeys(s.group_id for s in w.specs))


def test_the_first_wave_is_the_uniform_grid_with_its_seeds(tmp_path):
    empty = add(tmp_path / "s.zarr", {})
    w = wave(empty, groups=4)
    assert w.specs == group_specs(TASKS, INITS, 4, K, 7)  # pairs 0..3, the grid's seeds
    assert w.by_priority == (4, 0, 0) and w.started == 0 and w.skipped == 0
    assert planned(wave(empty, groups=100)) == [0, 1, 2, 3, 4, 5]  # a wave gives each pair one group


def test_waves_from_a_hand_made_store_skip_settled_pairs_and_stop(tmp_path):
    path = tmp_path / "s.zarr"
    episodes = add(path, {
        0: [1, 1], 6: [1, 1],  # pair 0: its last 2 groups all succeeded -> skipped
        1: [1, 0],  # pair 1: mixed
        2: [0, 0],  # pair 2: one group, all failed: undecided under patience 2
        3: [1, 1], 9: [0, 0],  # pair 3: two groups, but not one outcome: not skipped
        5: [0, 0], 11: [0, 0],  # pair 5: all failed twice -> skipped
    })
    episodes = add(path, {4: [0, 0], 10: [0, 0]}, run="other")  # another run's outcomes for pair 4: ignored
    w = wave(episodes)
    assert planned(w) == [4] and w.by_priority == (1, 0, 0) and w.skipped == 2  # unseen pair 4 first, alone

    episodes = add(path, {4: [1, 0]})
    w = wave(episodes)  # one complete group each for pairs 1, 2, 4: mixed ones (1, 4) before pair 2
    assert planned(w) == [7, 10, 8] and w.by_priority == (0, 2, 1) and w.started == 9
    assert {(s.group_id, s.rollout_index, s.seed, s.task_id, s.init_state_id) for s in w.specs} == {
        (s.group_id, s.rollout_index, s.seed, s.task_id, s.init_state_id)
        for s in group_specs(TASKS, INITS, 11, K, 7) if s.group_id in (7, 8, 10)}  # the uniform grid's groups
    assert planned(wave(episodes, groups=11)) == [7, 10]  # the budget (the run's total) ends mid-wave

    episodes = add(path, {7: [1, 1], 10: [1, 1], 8: [0, 0]})  # pair 2 now all failed twice: skipped
    w = wave(episodes)
    assert planned(w) == [13, 15, 16] and w.by_priority == (0, 0, 3) and w.skipped == 3
    episodes = add(path, {13: [1, 1], 15: [1, 1], 16: [1, 1]})
    assert planned(wave(episodes)) == [21]  # pair 3 ([1,1], [0,0], [1,1]) is the last one left
    assert planned(wave(episodes, patience=3)) == [12, 14, 17]  # a longer patience reopens pairs 0, 2, 5
    episodes = add(path, {21: [1, 1]})
    w = wave(episodes)
    assert w.specs == [] and w.skipped == w.num_pairs == 6 and w.started == 16  # nothing left: the caller stops


def test_a_run_killed_mid_wave_plans_the_rest_of_that_wave(tmp_path):
    """The wave [7, 10] (budget 11 groups), killed with group 10 whole and group 7 short of rollout 0:
    the resumed plan finishes group 7's missing rollout and nothing else, as the uninterrupted run."""
    path = tmp_path / "s.zarr"
    add(path, {0: [1, 1], 6: [1, 1], 1: [1, 0], 2: [0, 0], 3: [1, 1], 9: [0, 0], 5: [0, 0], 11: [0, 0], 4: [1, 0]})
    add(path, {10: [0, 1]})
    episodes = add(path, {7: [1, 0]}, rollouts=[1])
    w = wave(episodes, groups=11)
    assert planned(w) == [7] and w.unfinished == 1 and w.started == 11 and w.by_priority == (0, 0, 0)
    assert [(s.group_id, s.rollout_index) for s in missing_specs(w.specs, episodes, "r")] == [(7, 0)]
    # A bigger budget: the rest of the same wave (pair 2's group 8), not yet the next one.
    assert planned(wave(episodes, groups=12)) == [7, 8]


ENV = ["-o", "env.image_size=32", "-o", "env.max_steps=30", "-o", "collect.group_size=2", "-o", "collect.adaptive=true"]


def cfgrl(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception}"
    return result.stdout


def test_when_every_pair_is_skipped_the_command_says_so_and_stops(tmp_path):
    store = tmp_path / "s.zarr"
    args = ["collect", str(store), "--policy", "scripted:0.0", "--episodes", "40", "--workers", "2", *ENV,
            "-o", "env.tasks=[0]", "-o", "env.init_states=[0-2]", "-o", "collect.adaptive_patience=1"]
    for _ in range(2):  # the rerun plans nothing and stops the same way
        out = cfgrl(*args)
        assert "every one of the 3 (task, init state) pairs is skipped" in out and "stopping at 3 of 20 groups" in out
        assert Store(store).num_episodes == 6 and Store(store).episodes.success.all()
    table = cfgrl("inspect", str(store), "-o", "collect.adaptive_patience=1")
    assert "3 (task, init state) pairs, 3 complete groups of K=2, 0 mixed; 3 pairs skipped" in table
    assert "     0     1         1        2/2      0  all success  yes" in table
    assert "     0     1         1        2/2      0  all success  no" in cfgrl("inspect", str(store))  # patience 2


@pytest.mark.slow
def test_sigkill_mid_wave_then_resume_collects_what_an_uninterrupted_run_does(tmp_path):
    """36 pairs x K=2: wave 1 is 72 episodes, each committed as it finishes; the run is killed with
    the second commit's rows written. The same command resumes: it finishes the wave's started
    groups, then plans the next wave from the same outcomes as an uninterrupted run."""
    args = ["--policy", "scripted:0.5", "--episodes", "96", "--workers", "2", *ENV, "-o", "env.init_states=[0-8]",
            "-o", "collect.commit_seconds=0"]
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "cfgrl.cli", "collect", str(killed), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, FAULT_ENV: "store.appended@2"})
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its environment workers, orphaned
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, stderr
    assert 0 < Store(killed).num_episodes < 72
    short = int((Store(killed).episodes.groupby("group_id").size() < 2).sum())  # groups cut by the kill
    out = cfgrl("collect", str(killed), *args)
    assert "the run holds its 48 groups" in out and (f"finishing {short} started groups" in out) == (short > 0)
    cfgrl("collect", str(tmp_path / "fresh.zarr"), *args)
    key = ["group_id", "rollout_index", "seed", "task_id", "init_state_id", "success", "run_id"]
    resumed, fresh = (Store(tmp_path / n).episodes[key].sort_values(key[:2]).reset_index(drop=True)
                      for n in ("killed.zarr", "fresh.zarr"))
    assert len(resumed) == 96 and not resumed.duplicated(["group_id", "rollout_index"]).any()
    assert resumed.equals(fresh)
    assert resumed.group_id.max() >= 36  # a second wave ran: pairs got their second grid group
