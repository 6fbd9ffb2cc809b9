"""The report's statistics: the shift test of two ratios' per-head probe accuracies, and the
t-interval of a mean over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ShiftTest:
    """Two samples compared: Mann-Whitney U and the Hodges-Lehmann shift (second minus first)."""

    p_value: float  # two-sided Mann-Whitney U
    shift: float  # Hodges-Lehmann estimate: median of all pairwise differences
    ci_low: float  # bootstrap 95 % percentile interval of the shift
    ci_high: float


def compare_probe_accuracies(first: np.ndarray, second: np.ndarray, n_boot: int = 1000, seed: int = 0) -> ShiftTest:
    """Is `second` (say the toxic model's per-head accuracies) shifted against `first`?"""
    from detox.steering.probe import compare_accuracies

    test = compare_accuracies(np.ravel(first), np.ravel(second), seed=seed, n_boot=n_boot)
    return ShiftTest(test["p_value"], test["hl_shift"], test["hl_ci_low"], test["hl_ci_high"])


@dataclass(frozen=True)
class Interval:
    """The mean of some values with their sample std and a t confidence interval (NaN where undefined)."""

    mean: float
    std: float  # sample std (ddof 1); NaN for fewer than two values
    low: float
    high: float
    n: int


def t_interval(values: pd.Series, confidence: float = 0.95) -> Interval:
    """The mean of the values that are not NaN, with its two-sided Student-t interval."""
    from scipy import stats

    values = values.dropna()
    n = len(values)
    mean = values.mean() if n else np.nan
    if n < 2:
        return Interval(mean, np.nan, np.nan, np.nan, n)
    std = values.std(ddof=1)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / np.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n)
