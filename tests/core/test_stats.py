"""detox.core.stats: the comparison of two per-head accuracy distributions and the t-interval of a mean."""

import numpy as np
import pandas as pd
import pytest

from detox.core.schema import ConfigError
from detox.core.stats import compare_accuracies, t_interval


def test_compare_accuracies_detects_a_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    a = rng.normal(0.60, 0.05, 200)
    shifted = compare_accuracies(a, rng.normal(0.65, 0.05, 200), seed=1, n_boot=500)
    assert shifted["p_value"] < 1e-6
    assert 0 < shifted["hl_ci_low"] < shifted["hl_shift"] < shifted["hl_ci_high"]
    assert shifted["hl_shift"] == pytest.approx(0.05, abs=0.015)
    assert shifted["q_ci_low"] > 0 and shifted["mean_diff"] == pytest.approx(shifted["mean_b"] - shifted["mean_a"])
    same = compare_accuracies(a, rng.permutation(a), seed=1, n_boot=500)
    assert same["p_value"] > 0.9 and same["hl_shift"] == 0 and same["hl_ci_low"] <= 0 <= same["hl_ci_high"]
    assert same["prob_b_greater"] == pytest.approx(0.5)


def test_compare_accuracies_against_a_hand_computation():
    a, b = np.array([0.5, 0.6, 0.7]), np.array([0.6, 0.8, 0.9, 1.0])
    result = compare_accuracies(a, b, n_boot=10)
    pairs = b[:, None] - a[None, :]
    assert result["u_statistic"] == ((pairs > 0).sum() + 0.5 * (pairs == 0).sum())
    assert result["hl_shift"] == pytest.approx(np.median(pairs))
    assert result["q_diff"] == pytest.approx(np.quantile(b, 0.9) - np.quantile(a, 0.9))
    with pytest.raises(ConfigError, match="acc_a"):
        compare_accuracies([0.5], b)


def test_t_interval_against_a_hand_computation_leaving_nan_out():
    found = t_interval(pd.Series([1.0, 2.0, np.nan, 3.0]))
    half = 4.302652729911275 / np.sqrt(3)  # Student t's 97.5 % quantile at 2 degrees of freedom, std 1
    assert (found.n, found.mean, found.std) == (3, 2.0, 1.0)
    assert (found.low, found.high) == pytest.approx((2.0 - half, 2.0 + half))
    assert t_interval(np.array([1.0, 2.0, 3.0])) == found  # an array as a Series


def test_t_interval_of_fewer_than_two_values_is_the_mean_alone():
    one = t_interval(pd.Series([4.0, np.nan]))
    assert one.n == 1 and one.mean == 4.0 and np.isnan([one.std, one.low, one.high]).all()
    none = t_interval(pd.Series([], dtype=float))
    assert none.n == 0 and np.isnan(none.mean)
