"""The CFGRL core as plain functions: leave-one-out advantage, labels, condition dropout."""

import numpy as np
import pandas as pd
import pytest

from cfgrl.label import binary_labels, condition_dropout, default_threshold, rloo_advantage, ternary_labels


def test_rloo_advantage_hand_computed():
    returns = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 3.0])
    groups = np.array([7, 7, 7, 2, 2, 9])
    # group 7: 1 - (0+1)/2, 0 - (1+1)/2, 1 - (1+0)/2; group 2: 0 - 1, 1 - 0; group 9 (alone): no baseline -> 0
    np.testing.assert_allclose(rloo_advantage(returns, groups), [0.5, -1.0, 0.5, -1.0, 1.0, 0.0])


def test_binary_and_ternary_labels():
    adv = np.array([0.5, 0.0, -0.25, np.nan])
    assert binary_labels(adv, 0.0).tolist() == [1, 1, pd.NA, pd.NA]
    assert ternary_labels(adv, 0.0).tolist() == [1, 1, 0, pd.NA]
    assert ternary_labels(adv, 0.4).tolist() == [1, 0, 0, pd.NA]
    assert str(binary_labels(adv, 0.0).dtype) == "Int8"


def test_default_thresholds():
    assert default_threshold("episode_rloo", "sum") == 0.0
    assert default_threshold("window_rloo", "mean") == 0.0
    assert default_threshold("window_return", "sum") == 0.5
    assert default_threshold("window_return", "mean") == pytest.approx(0.5 / 50)
    assert default_threshold("none", "sum") is None


def test_condition_dropout_rate_within_binomial_bounds_and_only_on_conditioned():
    n, p = 20000, 0.1
    raw = pd.array([1, 0, pd.NA, 1] * (n // 4), dtype="Int8")
    final, hit = condition_dropout(raw, p, np.random.default_rng(3))
    conditioned = int((~raw.isna()).sum())
    mean, sd = conditioned * p, np.sqrt(conditioned * p * (1 - p))
    assert abs(hit.sum() - mean) < 5 * sd
    assert not hit[np.asarray(raw.isna())].any()  # ∅ stays ∅ and is never a "hit"
    assert final.isna().sum() == raw.isna().sum() + hit.sum()
    kept = ~hit & ~np.asarray(raw.isna())
    assert (final[kept] == raw[kept]).all()


def test_condition_dropout_reproducible_by_seed():
    raw = pd.array([1, 0] * 500, dtype="Int8")
    a = condition_dropout(raw, 0.3, np.random.default_rng(11))[1]
    b = condition_dropout(raw, 0.3, np.random.default_rng(11))[1]
    c = condition_dropout(raw, 0.3, np.random.default_rng(12))[1]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_condition_dropout_extremes_and_range():
    raw = pd.array([1, 0, pd.NA], dtype="Int8")
    assert condition_dropout(raw, 0.0, np.random.default_rng(0))[0].tolist() == [1, 0, pd.NA]
    assert condition_dropout(raw, 1.0, np.random.default_rng(0))[0].isna().all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        condition_dropout(raw, 1.5, np.random.default_rng(0))
