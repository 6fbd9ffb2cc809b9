"""The toy curve as a plain-text table, one line per share."""

from __future__ import annotations

from detox.toy.sweep import ToyCurveResult, share_key


def summary_table(result: ToyCurveResult) -> str:
    """Plain-text table, one line per share."""
    s, uniform = result.summary, result.config.uniform_share
    lines = [f"{'share':>7} {'minority ent [95% CI]':>24} {'paired diff [95% CI]':>25} "
             f"{'others':>7} {'norm ratio':>10} {'KL min':>7} {'KL bayes':>8} {'KL oth':>7} {'steps':>6}"
             + (f" {'excess':>7}" if result.config.design == "paper" else "")]
    for share in sorted({r.share for r in result.rows}):
        k = share_key(share)
        ent = f"{s[f'minority_entanglement_share_{k}']:.3f} [{s[f'minority_entanglement_lo_share_{k}']:.3f}, " \
              f"{s[f'minority_entanglement_hi_share_{k}']:.3f}]"
        diff = "(baseline)" if share == uniform else \
            f"{s[f'paired_diff_share_{k}']:+.3f} [{s[f'paired_diff_lo_share_{k}']:+.3f}, {s[f'paired_diff_hi_share_{k}']:+.3f}]"
        lines.append(f"{k:>7} {ent:>24} {diff:>25} {s[f'others_entanglement_share_{k}']:7.3f} "
                     f"{s[f'minority_norm_ratio_share_{k}']:10.3f} {s[f'kl_share_{k}']:7.3f} "
                     f"{s[f'kl_bayes_share_{k}']:8.3f} {s[f'kl_others_share_{k}']:7.3f} {s[f'steps_run_share_{k}']:6.0f}"
                     + (f" {s[f'excess_loss_share_{k}']:7.4f}" if result.config.design == "paper" else ""))
    lines.append(f"Spearman(minority entanglement, share): rho = {s['spearman_rho']:+.3f}, p = {s['spearman_p']:.3g}")
    lines.append(f"Spearman(minority norm ratio, share):   rho = {s['norm_spearman_rho']:+.3f}, p = {s['norm_spearman_p']:.3g}")
    lines.append(f"others' mean entanglement {s['others_entanglement']:.3f}; Welch bound {s['welch_bound']:.3f}; "
                 f"random level {s['random_level']:.3f} ({result.config.n_features} features in "
                 f"{result.config.feature_dim} dimensions)")
    if result.config.converge_tol:
        lines.append(f"converged (training loss within {result.config.converge_tol:g} nats of the optimum): "
                     f"{s['converged_runs']:.0f} of {len(result.rows)} runs")
    return "\n".join(lines)
