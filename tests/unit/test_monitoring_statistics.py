"""PSI, Jensen-Shannon and Wasserstein distances against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipml.monitoring import statistics as st


def test_psi_of_identical_shares_is_zero() -> None:
    shares = np.array([0.1, 0.2, 0.3, 0.4])

    assert st.psi(shares, shares) == 0.0


def test_psi_matches_the_hand_computed_sum() -> None:
    # Given two bins: expected (0.5, 0.5), actual (0.8, 0.2)
    # PSI = (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5) = 0.3 ln 1.6 + 0.3 ln 2.5
    expected = 0.3 * math.log(1.6) + 0.3 * math.log(2.5)

    assert st.psi([0.5, 0.5], [0.8, 0.2]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.41589, abs=1e-5)


def test_psi_is_symmetric_and_ten_bins_of_a_known_case() -> None:
    base = np.full(10, 0.1)
    moved = np.array([0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15])
    by_hand = 2 * (-0.05 * math.log(0.5)) + 2 * (0.05 * math.log(1.5))

    assert st.psi(base, moved) == pytest.approx(by_hand, abs=1e-12)
    assert st.psi(moved, base) == pytest.approx(st.psi(base, moved), abs=1e-12)


def test_an_empty_bin_gives_a_large_finite_psi() -> None:
    # An unseen category: baseline share 0, floored at PSI_EPSILON = 1e-4, then renormalised.
    value = st.psi([1.0, 0.0], [0.9, 0.1])
    e = np.array([1.0, 1e-4]) / 1.0001

    assert math.isfinite(value)
    assert value == pytest.approx((0.9 - e[0]) * math.log(0.9 / e[0]) + (0.1 - e[1]) * math.log(0.1 / e[1]))
    assert value > 0.6


def test_psi_rows_equals_psi_per_row() -> None:
    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.ones(6))
    rows = rng.dirichlet(np.ones(6), size=5)

    assert st.psi_rows(base, rows) == pytest.approx([st.psi(base, r) for r in rows])


def test_js_distance_matches_the_hand_computed_value() -> None:
    # P = (1, 0), Q = (0.5, 0.5); M = (0.75, 0.25)
    # KL(P||M) = log2(1/0.75); KL(Q||M) = 0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25)
    kl_p = math.log2(1 / 0.75)
    kl_q = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2)
    by_hand = math.sqrt((kl_p + kl_q) / 2)

    assert st.js_distance([1.0, 0.0], [0.5, 0.5]) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(0.55792, abs=1e-5)


def test_js_distance_is_bounded_by_one_and_zero_for_the_same_shares() -> None:
    assert st.js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert st.js_distance([0.2, 0.8], [0.2, 0.8]) == pytest.approx(0.0, abs=1e-7)


def test_js_distance_agrees_with_scipy_where_scipy_is_installed() -> None:
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8))

    assert st.js_distance(p, q) == pytest.approx(distance.jensenshannon(p, q, base=2), abs=1e-12)


def test_bin_counts_use_open_outer_bins_and_left_closed_inner_bins() -> None:
    edges = np.array([1.0, 2.0])
    values = np.array([0.5, 1.0, 1.5, 2.0, 9.0, np.nan])

    assert st.bin_counts(values, edges).tolist() == [1, 2, 2]
    assert st.bin_index(values, edges).tolist() == [0, 1, 1, 2, 2, 3]


def test_wasserstein_of_a_shift_by_a_tenth_of_a_uniform() -> None:
    # Baseline U(0, 1): quantile function Q(u) = u; current U(0.1, 1.1): Q(u) = u + 0.1.
    # W1 = integral of |0.1| = 0.1; the std of U(0, 1) is 1/sqrt(12), so the normalised W1 is
    # 0.1 * sqrt(12) = 0.34641.
    levels = st.quantile_levels(101)
    current = np.linspace(0.1, 1.1, 100_001)

    value = st.normalised_wasserstein(levels, 1 / math.sqrt(12), current)

    assert value == pytest.approx(0.1 * math.sqrt(12), rel=1e-6)


def test_wasserstein_of_the_same_sample_is_zero_and_missing_values_are_ignored() -> None:
    sample = np.random.default_rng(2).normal(size=10_000)
    quantiles = np.quantile(sample, st.quantile_levels(101))

    assert st.normalised_wasserstein(quantiles, sample.std(), np.append(sample, np.nan)) == pytest.approx(0.0)


def test_wasserstein_trapezoid_on_a_hand_made_grid() -> None:
    # Levels 0, 0.5, 1; differences 0, 1, 0 -> trapezoid area = (0+1)/2*0.5 + (1+0)/2*0.5 = 0.5
    assert st.wasserstein_from_quantiles([0, 0, 0], [0, 1, 0]) == pytest.approx(0.5)


def test_wasserstein_needs_something_to_compare() -> None:
    assert st.normalised_wasserstein([], 1.0, np.array([1.0])) is None
    assert st.normalised_wasserstein([0.0, 1.0], 1.0, np.array([np.nan])) is None
