"""The report's probe test: two ratios' probe accuracies compared with the model (its seed) as the unit,
not the head: the heads of one model are not independent draws, so each model gives one value, the
right tail of its heads (their 90th percentile: the paper's claim is a fatter right tail), and the two
ratios' values are compared (detox.core.stats, which also holds the t-interval the tables use)."""

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


TAIL = 0.9  # the quantile of a model's heads that stands for it


def compare_probe_accuracies(first: np.ndarray, second: np.ndarray, n_boot: int = 1000, seed: int = 0) -> ShiftTest:
    """Is `second` (say the toxic models' accuracies, models x layers x heads) shifted against `first`?
    One value a model: the TAIL quantile of its heads."""
    tails = [np.quantile(np.reshape(stack, (len(stack), -1)), TAIL, axis=1) for stack in (first, second)]
    test = compare_accuracies(*tails, seed=seed, n_boot=n_boot)
    return ShiftTest(test["p_value"], test["hl_shift"], test["hl_ci_low"], test["hl_ci_high"])
