"""The toy curve as a figure."""

from __future__ import annotations

import os

from detox.core.plots import pyplot
from detox.toy.sweep import ToyCurveResult, share_key

SHARE_LABEL = {"soft": "minority share of training sequences",
               "paper": "minority data as a share of each other chain's"}


def plot_toy_curve(result: ToyCurveResult, path: str | os.PathLike) -> None:
    """Two-panel PNG: minority entanglement (mean, 95 % band) vs share with the others' mean, Welch
    bound and random level; and the minority feature's norm relative to the others'."""
    plt = pyplot()
    cfg, s = result.config, result.summary
    shares = sorted({r.share for r in result.rows})
    keys = [share_key(x) for x in shares]
    mean = [s[f"minority_entanglement_share_{k}"] for k in keys]
    lo = [s[f"minority_entanglement_lo_share_{k}"] for k in keys]
    hi = [s[f"minority_entanglement_hi_share_{k}"] for k in keys]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(shares, mean, "o-", color="C3", label="minority chain")
    ax1.fill_between(shares, lo, hi, color="C3", alpha=0.2, label="95 % interval")
    ax1.plot(shares, [s[f"others_entanglement_share_{k}"] for k in keys], "s--", color="C0", label="other chains (mean)")
    ax1.axhline(s["random_level"], color="grey", ls=":", label=f"random directions ({s['random_level']:.2f})")
    ax1.axhline(s["welch_bound"], color="k", ls="-.", label=f"Welch bound ({s['welch_bound']:.2f})")
    ax1.set(xscale="log", xlabel=SHARE_LABEL[cfg.design], ylabel="entanglement (max |cos|)",
            title=f"Spearman rho = {s['spearman_rho']:+.2f} (p = {s['spearman_p']:.2g})")
    ax1.legend(fontsize=8)
    for r in result.rows:  # individual runs, to show the spread
        ax2.plot(r.share, r.minority_norm_ratio, ".", color="C2", alpha=0.4)
    ax2.plot(shares, [s[f"minority_norm_ratio_share_{k}"] for k in keys], "o-", color="C2")
    ax2.set(xscale="log", xlabel=SHARE_LABEL[cfg.design],
            ylabel="minority feature norm / others' mean", title="minority feature norm")
    fig.suptitle(f"Toy superposition ({cfg.design} design): {cfg.n_features} features of {cfg.n_chains} chains "
                 f"in {cfg.feature_dim} dimensions, {len(cfg.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
