"""Windows and every advantage estimator against hand-computed values on small real stores."""

import numpy as np
import pandas as pd
import pytest

from cfgrl.config import CFGRLConfig
from cfgrl.errors import CfgrlError
from cfgrl.label import make_label_index
from cfgrl.label.windows import StoreData, make_windows, resolve_stride
from cfgrl.store import StoreWriter

from label_stores import LAYOUT, REPLAN, Ep, episode_data, sparse


def label(stores, tmp_path, **settings):
    settings.setdefault("dropout_prob", 0.0)
    return make_label_index(stores, CFGRLConfig(**settings), REPLAN, tmp_path / "labels").windows


def by_window(table):
    return {(int(r.episode), int(r.start)): r for r in table.itertuples()}


def test_windows_start_at_query_steps_after_the_wait_with_padding(make_store):
    store = make_store([Ep(sparse(20, True), group=0, wait=3), Ep(sparse(7, False), group=0, wait=3)])
    w = make_windows(StoreData.read(store), resolve_stride(None, REPLAN), REPLAN)
    assert list(zip(w.episode.tolist(), w.start.tolist())) == [(0, 3), (0, 8), (0, 13), (0, 18), (1, 3)]
    assert w.num_valid.tolist() == [17, 12, 7, 2, 4]
    assert (store.frame_steps()[w.frame] == w.start).all()  # `frame` is obs0's row in frames/<cam>
    assert w.frame.tolist() == [0, 1, 2, 3, 4]
    thinned = make_windows(StoreData.read(store), resolve_stride(10, REPLAN), REPLAN)
    assert list(zip(thinned.episode.tolist(), thinned.start.tolist())) == [(0, 3), (0, 13), (1, 3)]
    with pytest.raises(CfgrlError, match="multiple of inference.replan_steps=5"):
        resolve_stride(7, REPLAN)


def test_a_frame_stored_during_the_wait_starts_no_window(tmp_path):
    data = episode_data(Ep(sparse(12, True), group=0, wait=2), 0)
    data.frame_step = np.array([0, 2, 7])  # the reset image, then the two query steps
    data.frames = {cam: np.zeros((3, 4, 4, 3), np.uint8) for cam in LAYOUT.camera_names}
    with StoreWriter(tmp_path / "s.zarr", LAYOUT) as writer:
        writer.append(data)
    from cfgrl.store import Store

    w = make_windows(StoreData.read(Store(tmp_path / "s.zarr")), REPLAN, REPLAN)
    assert w.start.tolist() == [2, 7] and w.frame.tolist() == [1, 2] and w.num_valid.tolist() == [10, 5]


def test_window_table_columns_and_dtypes(make_store, tmp_path):
    store = make_store([Ep(sparse(12, True), group=0), Ep(sparse(9, False), group=0)])
    table = label([store], tmp_path)
    assert {c: str(t) for c, t in table.dtypes.items()} == {
        "store": "int16", "episode": "int64", "start": "int32", "num_valid": "int16", "frame": "int64",
        "task_id": "int32", "group_id": "int64", "advantage": "float64", "raw_label": "Int8", "label": "Int8",
        "dropout_hit": "bool",
    }


def test_episode_rloo_hand_computed_and_grouping(make_store, tmp_path):
    store = make_store([
        Ep(sparse(12, True), group=0), Ep(sparse(20, False), group=0), Ep(sparse(8, True), group=0),
        Ep(sparse(6, False), group=5, task=1), Ep(sparse(11, True), group=5, task=1),
    ])
    table = label([store], tmp_path)
    expected = {0: 1 - (0 + 1) / 2, 1: 0 - (1 + 1) / 2, 2: 1 - (1 + 0) / 2, 3: 0 - 1, 4: 1 - 0}
    for episode, adv in expected.items():
        rows = table[table.episode == episode]
        assert len(rows) == -(-store.episodes.length[episode] // REPLAN)  # one window per query step
        np.testing.assert_allclose(rows.advantage, adv)  # every window of episode i gets A_i
        assert rows.raw_label.tolist() == ([1] * len(rows) if adv >= 0 else [pd.NA] * len(rows))
    assert table.groupby("episode").group_id.first().tolist() == [0, 0, 0, 5, 5]
    assert table.groupby("episode").task_id.first().tolist() == [0, 0, 0, 1, 1]


def test_window_rloo_hand_computed_with_absorbing_ended_rollouts(make_store, tmp_path):
    a = [0, 0.25, 0, 0, 0, 0.5, 0, 0, 0, 1.0]  # length 10, success
    b = [0, 0, 0, 0, 1.0]  # length 5, success: ends first, absorbing with value 1
    c = [0.0] * 15  # length 15, failure
    store = make_store([Ep(a, group=0), Ep(b, group=0), Ep(c, group=0, success=False)])
    adv = {k: r.advantage for k, r in by_window(label([store], tmp_path, label_source="window_rloo")).items()}
    # G_a(0)=1.75, G_a(5)=1.5, G_b(0)=1, G_c(t)=0; ended rollouts contribute their success.
    expected = {
        (0, 0): 1.75 - (1.0 + 0.0) / 2, (0, 5): 1.5 - (1.0 + 0.0) / 2,
        (1, 0): 1.0 - (1.75 + 0.0) / 2,
        (2, 0): 0.0 - (1.75 + 1.0) / 2, (2, 5): 0.0 - (1.5 + 1.0) / 2, (2, 10): 0.0 - (1.0 + 1.0) / 2,
    }
    assert adv.keys() == expected.keys()
    for key, value in expected.items():
        assert adv[key] == pytest.approx(value), key


def test_window_rloo_equals_episode_rloo_for_sparse_success_rewards(make_store, tmp_path):
    outcomes = [(12, True, 0), (30, False, 0), (8, True, 0), (25, False, 0), (9, True, 0), (14, False, 1), (6, True, 1)]
    eps = [Ep(sparse(n, s), group=g) for n, s, g in outcomes]
    store = make_store(eps)
    episode = label([store], tmp_path / "a", label_source="episode_rloo")
    window = label([store], tmp_path / "b", label_source="window_rloo")
    np.testing.assert_allclose(window.advantage, episode.advantage)


def test_window_return_sum_and_mean_with_their_default_thresholds(make_store, tmp_path):
    rewards = [0.0] * 60
    rewards[3], rewards[59] = 0.25, 1.0
    store = make_store([Ep(rewards, group=0), Ep(sparse(60, False), group=0)])
    summed = by_window(label([store], tmp_path / "sum", label_source="window_return"))
    assert summed[(0, 0)].num_valid == 50 and summed[(0, 0)].advantage == pytest.approx(0.25)  # steps 0..49
    assert summed[(0, 5)].advantage == pytest.approx(0.0)  # steps 5..54
    assert summed[(0, 10)].advantage == pytest.approx(1.0) and summed[(0, 10)].num_valid == 50
    assert summed[(0, 15)].advantage == pytest.approx(1.0) and summed[(0, 15)].num_valid == 45
    labels = {k: r.raw_label for k, r in summed.items() if k[0] == 0}
    assert [labels[(0, t)] for t in (0, 5, 10, 15)] == [pd.NA, pd.NA, 1, 1]  # 1 iff the window holds the success
    mean = by_window(label([store], tmp_path / "mean", label_source="window_return", window_return_reduce="mean"))
    assert mean[(0, 0)].advantage == pytest.approx(0.25 / 50)
    assert mean[(0, 15)].advantage == pytest.approx(1.0 / 45)
    assert [mean[(0, t)].raw_label for t in (0, 5, 10, 15)] == [pd.NA, pd.NA, 1, 1]


def test_ternary_scheme_and_threshold_override(make_store, tmp_path):
    store = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0), Ep(sparse(10, True), group=0)])
    table = label([store], tmp_path / "t", label_scheme="ternary")
    assert table.groupby("episode").raw_label.first().tolist() == [1, 0, 1]
    table = label([store], tmp_path / "h", label_scheme="ternary", label_threshold=0.75)
    assert table.groupby("episode").raw_label.first().tolist() == [0, 0, 0]  # A = 0.5, -1, 0.5


def test_zero_variance_groups_policies(make_store, tmp_path):
    store = make_store([
        Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0),  # a signal
        Ep(sparse(10, True), group=1), Ep(sparse(10, True), group=1),  # all succeeded: no signal
        Ep(sparse(10, False), group=2), Ep(sparse(10, False), group=2),  # all failed: no signal
    ])
    flat = [2, 3, 4, 5]
    default = label([store], tmp_path / "u")
    assert default[default.episode.isin(flat)].raw_label.isna().all()
    assert default[default.episode == 0].raw_label.tolist() == [1, 1]
    dropped = label([store], tmp_path / "d", zero_variance_groups="drop")
    assert sorted(dropped.episode.unique()) == [0, 1]
    kept = label([store], tmp_path / "k", zero_variance_groups="keep")
    assert kept[kept.episode.isin(flat)].advantage.eq(0).all()  # A = 0 >= threshold 0 even for failures...
    assert kept[kept.episode.isin([2, 3])].raw_label.eq(1).all()  # ...so keep labels by outcome: all succeeded
    assert kept[kept.episode.isin([4, 5])].raw_label.isna().all()  # all failed: ∅ in binary
    kept = label([store], tmp_path / "kt", zero_variance_groups="keep", label_scheme="ternary")
    assert kept.groupby("episode").raw_label.first().tolist() == [1, 0, 1, 1, 0, 0]
    # window_return needs no group: keep leaves its own estimate (does the window hold the success?)
    long = make_store([Ep(sparse(60, True), group=0), Ep(sparse(60, True), group=0),
                       Ep(sparse(60, True), group=1), Ep(sparse(60, False), group=1)], name="long")
    kept = label([long], tmp_path / "kw", label_source="window_return", zero_variance_groups="keep")
    first = kept[kept.episode == 0]
    assert first.raw_label.fillna(-1).tolist() == [-1, -1] + [1] * 10  # windows at 0 and 5 end before step 59


def test_groups_of_one_rollout_are_zero_variance_for_rloo_and_counted(make_store, tmp_path):
    store = make_store([
        Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0),  # a signal
        Ep(sparse(10, True), group=1), Ep(sparse(15, False), group=2),  # groups of one rollout: no baseline
    ])

    def counts(**settings):
        index = make_label_index([store], CFGRLConfig(dropout_prob=0.0, **settings), REPLAN, tmp_path / "labels")
        return index.windows, index.manifest["counts"]

    table, c = counts()
    assert table[table.episode >= 2].raw_label.isna().all()
    assert (c["single_rollout_groups"], c["single_rollout_windows"]) == (2, 5)
    assert c["single_rollout_labels"] == {"1": 0, "0": 0, "null": 5, "dropped": 0}
    table, c = counts(zero_variance_groups="keep", label_scheme="ternary")
    assert table.groupby("episode").raw_label.first().tolist() == [1, 0, 1, 0]  # by outcome
    assert c["single_rollout_labels"] == {"1": 2, "0": 3, "null": 0, "dropped": 0}
    assert counts(zero_variance_groups="drop")[1]["single_rollout_labels"] == {"1": 0, "0": 0, "null": 0, "dropped": 5}
    table, c = counts(label_source="window_return")  # no baseline needed: labelled from the window's rewards
    assert table[table.episode == 2].raw_label.tolist() == [1, 1] and table[table.episode == 3].raw_label.isna().all()
    assert c["single_rollout_labels"] == {"1": 2, "0": 0, "null": 3, "dropped": 0}


@pytest.mark.parametrize("source", ["episode_rloo", "window_rloo"])
def test_a_store_of_single_rollouts_is_refused_for_group_relative_sources(make_store, tmp_path, source):
    store = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=1), Ep(sparse(10, True), group=2)])
    with pytest.raises(CfgrlError, match="every group holds one rollout") as refused:
        label([store], tmp_path, label_source=source, zero_variance_groups="keep")
    assert f"label_source={source} has no leave-one-out baseline" in str(refused.value)
    assert "cfgrl.label_source=window_return or cfgrl.label_source=none" in str(refused.value)
    assert not (tmp_path / "labels").exists()
    table = label([store], tmp_path, label_source="window_return")  # the sources the line names work on it
    assert table.groupby("episode").raw_label.first().tolist() == [1, pd.NA, 1]
    assert label([store], tmp_path, label_source="none").raw_label.isna().all()


def test_groups_are_per_store_and_may_not_mix_tasks(make_store, tmp_path):
    first = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0)], name="a")
    second = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, True), group=0)], name="b")
    table = label([first, second], tmp_path)
    assert table[table.store == 0].groupby("episode").advantage.first().tolist() == [1.0, -1.0]
    assert table[table.store == 1].raw_label.isna().all()  # its own group 0 has one outcome
    mixed = make_store([Ep(sparse(10, True), group=3, task=0), Ep(sparse(10, False), group=3, task=1)], name="c")
    with pytest.raises(CfgrlError, match="group 3 mixes"):
        label([mixed], tmp_path)


def test_label_source_none_is_plain_behaviour_cloning(make_store, tmp_path):
    store = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, True), group=0)])
    table = label([store], tmp_path, label_source="none", dropout_prob=0.5)
    assert table.advantage.isna().all() and table.raw_label.isna().all() and table.label.isna().all()
    assert not table.dropout_hit.any()


def test_no_conditioned_label_is_an_error_that_says_why(make_store, tmp_path):
    store = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, True), group=0),
                        Ep(sparse(10, False), group=1), Ep(sparse(10, False), group=1)])
    with pytest.raises(CfgrlError, match=r"every group had the same outcome \(1 of 2 all succeeded, 1 all failed\)") as flat:
        label([store], tmp_path)
    assert "zero_variance_groups=keep (each group labelled by its outcome: all succeeded o=1, all failed ∅" in str(flat.value)
    failed = make_store([Ep(sparse(10, False), group=0), Ep(sparse(10, False), group=0)], name="f")
    with pytest.raises(CfgrlError, match=r"\(0 of 1 all succeeded, 1 all failed\)") as flat:
        label([failed], tmp_path)
    assert "keep" not in str(flat.value)  # it could only label these failures ∅ (or o=0 in ternary): nothing to learn
    varied = make_store([Ep(sparse(10, True), group=0), Ep(sparse(10, False), group=0)], name="v")
    with pytest.raises(CfgrlError, match="no advantage reached cfgrl.label_threshold=2"):
        label([varied], tmp_path, label_threshold=2.0)


def test_window_rloo_matches_the_definition_on_random_dense_rewards(make_store, tmp_path):
    rng = np.random.default_rng(4)
    eps = []
    for group in range(4):
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.integers(3, 40))
            eps.append(Ep(rng.choice([0.0, 0.5, 1.0], n).tolist(), group=group, success=bool(rng.random() < 0.5), wait=2))
    store = make_store(eps)
    table = label([store], tmp_path, label_source="window_rloo", zero_variance_groups="keep", label_threshold=-99.0)
    rewards = [np.asarray(e.rewards) for e in eps]

    def value(j, t):  # V_j(t): reward-to-go while running, its success once ended
        return rewards[j][t:].sum() if t < len(rewards[j]) else float(store.episodes.success[j])

    for row in table.itertuples():
        others = [j for j, e in enumerate(eps) if e.group == eps[row.episode].group and j != row.episode]
        own = rewards[row.episode][row.start:].sum()
        expected = own - (np.mean([value(j, row.start) for j in others]) if others else own)
        assert row.advantage == pytest.approx(expected), (row.episode, row.start)


def test_group_ids_are_scoped_by_collection_run(tmp_path):
    """Two collection runs appended to one store reuse group ids 0..G-1: their groups stay apart."""
    first = [Ep(sparse(6, s), group=0, extra={"run_id": "a", "policy_id": "p1"}) for s in (True, False)]
    second = [Ep(sparse(6, s), group=0, extra={"run_id": "b", "policy_id": "p2"}) for s in (True, True, False, False)]
    from label_stores import write_store

    from cfgrl.label.advantage import Groups, rloo_advantage

    data = StoreData.read(write_store(tmp_path / "s.zarr", first + second))
    groups = Groups.of(data)
    assert groups.size.tolist() == [2, 4]
    np.testing.assert_allclose(rloo_advantage(data.episode_return(), groups.code), [1, -1, 2 / 3, 2 / 3, -2 / 3, -2 / 3])
