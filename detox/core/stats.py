"""Statistics shared by the stages and the report (numpy and scipy only, no torch): the comparison of
two distributions of per-head probe accuracies (`compare_accuracies`: Mann-Whitney U, the
Hodges-Lehmann shift and a right-tail quantile with bootstrap intervals; the paper finds a fatter right
tail for the model pre-trained with toxic data), and the Student-t interval of a mean over seeds.

scipy.stats takes about a second to load: it is imported where it is used, so that the report's
modules load without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detox.core.schema import ConfigError


def compare_accuracies(acc_a, acc_b, seed: int = 0, n_boot: int = 10000, quantile: float = 0.9) -> dict:
    """Do the per-head probe accuracies of model a and model b come from different distributions?

    Returns (accuracies in the units given, e.g. fractions; "shift" always means b minus a):
      n_a, n_b               number of heads of each model;
      mean_a, mean_b         mean accuracy; mean_diff = mean_b - mean_a;
      u_statistic, p_value   two-sided Mann-Whitney U test of "a and b are equally distributed"
                             (U counts the pairs (a_i, b_j) with b_j > a_i, ties as one half);
      prob_b_greater         U / (n_a n_b): the chance that a random head of b beats a random head of a
                             (0.5 when neither model is ahead);
      hl_shift               Hodges-Lehmann estimate of the location shift b - a: the median of all
                             pairwise differences b_j - a_i;
      hl_ci_low, hl_ci_high  its 95 % percentile-bootstrap interval (heads of a and of b resampled
                             independently, `n_boot` times);
      q_a, q_b, q_diff       the `quantile` (default 90th percentile) of each model's accuracies and
                             q_b - q_a, a measure of the right tail (the best heads);
      q_ci_low, q_ci_high    the 95 % bootstrap interval of q_diff, from the same resamples.
    """
    from scipy.stats import mannwhitneyu

    a = np.asarray(acc_a, dtype=np.float64).ravel()
    b = np.asarray(acc_b, dtype=np.float64).ravel()
    for name, values in (("acc_a", a), ("acc_b", b)):
        if values.size < 2 or not np.isfinite(values).all():
            raise ConfigError(f"compare_accuracies: {name} needs at least 2 finite accuracies, got {values.size}")
    if n_boot < 1:
        raise ConfigError(f"compare_accuracies: n_boot={n_boot} must be at least 1")
    if not 0 < quantile < 1:
        raise ConfigError(f"compare_accuracies: quantile={quantile} must lie strictly between 0 and 1")
    u, p_value = mannwhitneyu(b, a, alternative="two-sided")
    rng = np.random.default_rng(seed)
    hl_boot, q_boot = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, 2 ** 22 // (a.size * b.size))  # resamples per step: bounds the pairwise-difference array
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        ra = a[rng.integers(0, a.size, (size, a.size))]
        rb = b[rng.integers(0, b.size, (size, b.size))]
        hl_boot[start:start + size] = np.median((rb[:, :, None] - ra[:, None, :]).reshape(size, -1), axis=1)
        q_boot[start:start + size] = np.quantile(rb, quantile, axis=1) - np.quantile(ra, quantile, axis=1)
    q_a, q_b = float(np.quantile(a, quantile)), float(np.quantile(b, quantile))
    return {
        "n_a": a.size, "n_b": b.size,
        "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": float(b.mean() - a.mean()),
        "u_statistic": float(u), "p_value": float(p_value), "prob_b_greater": float(u) / (a.size * b.size),
        "hl_shift": float(np.median(b[:, None] - a[None, :])),
        "hl_ci_low": float(np.percentile(hl_boot, 2.5)), "hl_ci_high": float(np.percentile(hl_boot, 97.5)),
        "q_a": q_a, "q_b": q_b, "q_diff": q_b - q_a,
        "q_ci_low": float(np.percentile(q_boot, 2.5)), "q_ci_high": float(np.percentile(q_boot, 97.5)),
    }


@dataclass(frozen=True)
class Interval:
    """The mean of some values with their sample std and a t confidence interval (NaN where undefined)."""

    mean: float
    std: float  # sample std (ddof 1); NaN for fewer than two values
    low: float
    high: float
    n: int


def t_interval(values, confidence: float = 0.95) -> Interval:
    """The mean of the values that are not NaN (an array or a pandas Series), with its two-sided
    Student-t interval."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = len(values)
    mean = values.mean() if n else np.nan
    if n < 2:
        return Interval(mean, np.nan, np.nan, np.nan, n)
    std = values.std(ddof=1)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / np.sqrt(n)
    return Interval(mean, std, mean - half, mean + half, n)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (statsmodels' multipletests, method "holm";
    written here since statsmodels is not a dependency). NaN stays NaN, out of the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted
