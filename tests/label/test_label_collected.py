"""End to end: label a store that `cfgrl collect` wrote from the built-in environment."""

import subprocess
import sys

import numpy as np
import pytest

from cfgrl.label import load_label_index
from cfgrl.store import Store


def cfgrl(*args):
    return subprocess.run([sys.executable, "-m", "cfgrl.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_label_a_collected_builtin_store(tmp_path):
    path = tmp_path / "reach.zarr"
    collected = cfgrl("collect", path, "--policy", "scripted:0.5", "-o", "collect.groups=2", "-o", "collect.group_size=3",
                      "-o", "collect.workers=1")
    assert collected.returncode == 0, collected.stderr[-2000:]
    labelled = cfgrl("label", path, "-o", "cfgrl.zero_variance_groups=keep", "-o", "cfgrl.label_scheme=ternary")
    assert labelled.returncode == 0, labelled.stderr[-2000:]
    assert "overall" in labelled.stdout

    store, index = Store(path), load_label_index(path)
    index.check_stores([store])
    ep, w = store.episodes, index.windows
    frame_steps = store.frame_steps()
    assert (frame_steps[w.frame] == w.start).all()  # obs0 is a stored frame
    length, wait = ep.length.to_numpy()[w.episode], ep.num_wait_steps.to_numpy()[w.episode]
    assert ((w.start >= wait) & (w.start < length)).all()
    np.testing.assert_array_equal(w.num_valid, np.minimum(50, length - w.start))
    # every stored observation after the wait starts one window (the default stride)
    query = [(e, s) for e in range(len(ep)) for s in frame_steps[ep.frame_start[e]: ep.frame_start[e] + ep.frame_count[e]]
             if ep.num_wait_steps[e] <= s < ep.length[e]]
    assert sorted(zip(w.episode, w.start)) == sorted(query)
    # episode_rloo from the rewards, independently: R_i - mean of the others in its group
    returns = np.array([store.episode_steps(e, "reward").sum() for e in range(len(ep))])
    for e in range(len(ep)):
        group = [j for j in range(len(ep)) if ep.group_id[j] == ep.group_id[e]]
        others = [j for j in group if j != e]
        expected = returns[e] - returns[others].mean()
        np.testing.assert_allclose(w.advantage[w.episode == e], expected)
        one_outcome = np.ptp(returns[group]) == 0 and ep.success[group].nunique() == 1
        # keep labels a group with one outcome by that outcome, otherwise A >= 0 decides
        label = int(ep.success[e]) if one_outcome else int(expected >= 0)
        assert (w.raw_label[w.episode == e] == label).all()
