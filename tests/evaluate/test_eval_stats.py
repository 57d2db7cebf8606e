"""Interval estimates against values worked out by hand (z = 1.959964 for 95%)."""

import math

import pytest

from cfgrl.evaluate.stats import newcombe_paired_interval, paired_difference, wilson_interval, z_value


def test_z_value_is_the_two_sided_95_quantile():
    assert z_value() == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # 8/10: centre (0.8 + 0.192073) / 1.384146 = 0.716742, half 1.959964 * 0.160012 / 1.384146 = 0.226578
        (8, 10, 0.490164, 0.943320),
        # 0/10: [0, z^2/n / (1 + z^2/n)] = [0, 0.384146 / 1.384146]
        (0, 10, 0.0, 0.277533),
        # 10/10 mirrors 0/10
        (10, 10, 0.722467, 1.0),
        # 25/50: symmetric, half = 1.959964 * sqrt(0.005 + 0.000384146) / 1.076829 = 0.133555
        (25, 50, 0.366445, 0.633555),
    ],
)
def test_wilson_interval_matches_hand_computed_values(k, n, low, high):
    got_low, got_high = wilson_interval(k, n)
    assert got_low == pytest.approx(low, abs=1e-5)
    assert got_high == pytest.approx(high, abs=1e-5)


def test_wilson_half_width_for_half_successes():
    # p = 0.5, n = 50: half = z sqrt(0.005 + z^2/10000) / (1 + z^2/50)
    z = 1.959963985
    half = z * math.sqrt(0.25 / 50 + z * z / (4 * 50 * 50)) / (1 + z * z / 50)
    low, high = wilson_interval(25, 50)
    assert high - 0.5 == pytest.approx(half, rel=1e-6)
    assert 0.5 - low == pytest.approx(half, rel=1e-6)


@pytest.mark.parametrize("n", [1, 5, 10, 13, 50])
def test_wilson_ends_are_exact_at_zero_and_all_successes(n):
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    low, high = wilson_interval(n, n)
    assert low <= 1.0 <= high


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_with_uncorrelated_table_is_root_sum_of_squares():
    # a=b=c=d=1: phi = (1 - 1) / ... = 0, p_a = p_b = 0.5, Wilson(2/4) = 0.5 -/+ 0.349962, so the
    # interval is 0 -/+ sqrt(2) * 0.349962 = -/+ 0.494921.
    low, high = newcombe_paired_interval(1, 1, 1, 1)
    assert low == pytest.approx(-0.494921, abs=1e-5)
    assert high == pytest.approx(0.494921, abs=1e-5)


def test_newcombe_with_perfect_agreement_is_narrow_around_zero():
    # Every pair agrees (phi = 1): the interval shrinks to |(p - l) - (u - p)| on each side.
    low, high = newcombe_paired_interval(6, 0, 0, 4)
    l, u = wilson_interval(6, 10)
    assert low == pytest.approx(-abs((0.6 - l) - (u - 0.6)), abs=1e-9)
    assert high == pytest.approx(abs((u - 0.6) - (0.6 - l)), abs=1e-9)
    assert low < 0.0 < high
    uncorrelated_half = math.hypot(0.6 - l, u - 0.6)  # what phi = 0 would give on each side
    assert high - low < 0.25 * 2 * uncorrelated_half


def test_paired_difference_counts_the_table_and_is_antisymmetric():
    a = [1, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 0, 1, 1, 0, 0, 1]
    d = paired_difference(a, b)
    assert (d.both, d.only_a, d.only_b, d.neither, d.n) == (4, 3, 0, 3, 10)
    assert d.diff == pytest.approx(0.3)
    assert d.low < d.diff < d.high
    r = paired_difference(b, a)
    assert r.diff == pytest.approx(-0.3)
    assert (r.low, r.high) == pytest.approx((-d.high, -d.low))


def test_pairing_is_tighter_than_independent_intervals():
    # Same episodes solved under both weights except two: the paired interval is much narrower
    # than the square-and-add of two independent Wilson intervals (phi = 0).
    a = [1] * 12 + [0] * 8
    b = [1] * 10 + [0] * 10
    paired = paired_difference(a, b)
    independent = newcombe_paired_interval(6, 6, 4, 4)  # same margins, no correlation
    assert paired.high - paired.low < 0.75 * (independent[1] - independent[0])


def test_paired_difference_needs_equal_lengths():
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])
