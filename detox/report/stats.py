"""The report's probe test: two ratios' per-head probe accuracies compared (detox.core.stats, which also
holds the t-interval of a mean over seeds the tables use), read as the shift the figures show."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detox.core.stats import compare_accuracies


@dataclass(frozen=True)
class ShiftTest:
    """Two samples compared: Mann-Whitney U and the Hodges-Lehmann shift (second minus first)."""

    p_value: float  # two-sided Mann-Whitney U
    shift: float  # Hodges-Lehmann estimate: median of all pairwise differences
    ci_low: float  # bootstrap 95 % percentile interval of the shift
    ci_high: float


def compare_probe_accuracies(first: np.ndarray, second: np.ndarray, n_boot: int = 1000, seed: int = 0) -> ShiftTest:
    """Is `second` (say the toxic model's per-head accuracies) shifted against `first`?"""
    test = compare_accuracies(np.ravel(first), np.ravel(second), seed=seed, n_boot=n_boot)
    return ShiftTest(test["p_value"], test["hl_shift"], test["hl_ci_low"], test["hl_ci_high"])
