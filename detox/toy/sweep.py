"""The toy curve: every (share, seed), in worker processes, summarised with intervals over seeds."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from detox.core.geometry import random_entanglement_level, welch_bound
from detox.core.progress import progress
from detox.toy.config import ToyConfig
from detox.toy.train import ToyRunResult, train_toy


@dataclass
class ToyCurveResult:
    config: ToyConfig
    rows: list[ToyRunResult]
    summary: dict[str, float]  # flat, MLflow-ready


def _one_thread() -> None:
    torch.set_num_threads(1)  # workers share the cores; more threads per tiny model only contend


def _train_job(args: tuple[ToyConfig, float, int]) -> ToyRunResult:
    return train_toy(*args)


def share_key(share: float) -> str:
    return f"{share:.4g}"


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (nan half-width with one seed)."""
    m = float(np.mean(x))
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def summarize(cfg: ToyConfig, rows: list[ToyRunResult]) -> dict[str, float]:
    """Flat metrics: per share mean/95 % CI of minority entanglement, paired difference to the same
    seed's uniform run, others' entanglement, norm ratio, KL; Spearman of entanglement vs share;
    Welch bound and random level."""
    uniform = cfg.uniform_share
    base = {r.seed: r.minority_entanglement for r in rows if r.share == uniform}
    out: dict[str, float] = {}
    for share in sorted({r.share for r in rows}):
        rs = [r for r in rows if r.share == share]
        k = share_key(share)
        m, lo, hi = _mean_ci(np.array([r.minority_entanglement for r in rs]))
        out |= {f"minority_entanglement_share_{k}": m, f"minority_entanglement_lo_share_{k}": lo,
                f"minority_entanglement_hi_share_{k}": hi}
        if share != uniform:
            m, lo, hi = _mean_ci(np.array([r.minority_entanglement - base[r.seed] for r in rs]))
            out |= {f"paired_diff_share_{k}": m, f"paired_diff_lo_share_{k}": lo, f"paired_diff_hi_share_{k}": hi}
        measured = ("others_entanglement", "minority_norm_ratio", "kl", "kl_others", "kl_bayes", "steps_run")
        for name in measured + (("excess_loss",) if cfg.design == "paper" else ()):
            out[f"{name}_share_{k}"] = float(np.mean([getattr(r, name) for r in rs]))
    shares = [r.share for r in rows]
    rho, p = stats.spearmanr(shares, [r.minority_entanglement for r in rows])
    rho_n, p_n = stats.spearmanr(shares, [r.minority_norm_ratio for r in rows])
    out |= {
        "spearman_rho": float(rho),
        "spearman_p": float(p),
        "norm_spearman_rho": float(rho_n),
        "norm_spearman_p": float(p_n),
        "others_entanglement": float(np.mean([r.others_entanglement for r in rows])),
        "welch_bound": welch_bound(cfg.n_features, cfg.feature_dim),
        "random_level": random_entanglement_level(cfg.feature_dim, cfg.n_features - 1, cfg.random_trials),
    }
    if cfg.converge_tol:
        out["converged_runs"] = float(sum(r.excess_loss < cfg.converge_tol for r in rows))
    return out


def run_toy_curve(cfg: ToyConfig, on_row: Callable[[ToyRunResult], None] | None = None) -> ToyCurveResult:
    """Train every (share, seed) of (cfg.shares + the uniform share) × cfg.seeds, in cfg.workers
    processes; `on_row` sees each run as it finishes (a long curve's progress)."""
    shares = sorted(set(cfg.shares) | {cfg.uniform_share})
    jobs = [(cfg, share, seed) for share in shares for seed in cfg.seeds]
    if cfg.workers > 1:
        # spawn: a fresh interpreter per worker, safe with torch's thread pools (fork is not).
        pool = multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=_one_thread)
        results = pool.imap_unordered(_train_job, jobs)
    else:
        pool, results = None, map(_train_job, jobs)
    rows = []
    for row in progress(results, total=len(jobs), desc="toy runs"):
        rows.append(row)
        if on_row is not None:
            on_row(row)
    rows.sort(key=lambda r: (r.share, r.seed))
    if pool is not None:
        pool.close()
        pool.join()
    return ToyCurveResult(cfg, rows, summarize(cfg, rows))
