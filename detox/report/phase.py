"""The phase diagram: the study's matched-cost measures over a world knob x the toxic share.

When the mass-mean curves of one experiment come from more than one configuration of the base models
(say `data.world.clean.hostile_share` at 0.05, 0.15 and 0.3: experiment=cpu_study_phase), the report
draws each configuration as a line against the ratio: the unsteered toxicity, the drop at matched cost
and the share of toxicity removed there, each the mean over seeds with its 95 % bootstrap interval; the
table holds the same cells. Whether the effect of the ratio differs from zero in each configuration is
the power table's call (seeds the unit, Holm over the claim's family), not this section's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from detox.report.figures import colours, figure
from detox.report.frontier import TOXICITIES, bootstrap_mean, interval_text, per_seed, primary_toxicity
from detox.report.runs import ratio_label

PHASE_TITLE = "Phase diagram"
MEASURES = {"unsteered": "unsteered %", "drop_at_budget": "drop at matched cost (points)",
            "removed_at_budget": "removed at matched cost %"}


def phase_seeds(curves: pd.DataFrame, ce_budget: float, min_well_formed: float) -> pd.DataFrame:
    """The mass-mean curves' per-seed measures, when they come from more than one configuration
    (empty otherwise: one configuration has no phase diagram)."""
    steered = curves[curves["direction"].ne("random")] if not curves.empty else curves
    if steered.empty or steered["configuration"].nunique() < 2:
        return pd.DataFrame()
    return per_seed(steered, ce_budget, min_well_formed)


def phase_table(seeds: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (configuration, ratio): each measure of the primary toxicity, mean [95 % bootstrap]."""
    primary = primary_toxicity(seeds)
    rows = []
    for (config, ratio), frame in seeds.groupby(["configuration", "ratio"], sort=True):
        rows.append({"configuration": config, "toxic share %": ratio_label(ratio), "seeds": len(frame),
                     **{title: interval_text(bootstrap_mean(frame[f"curve_{primary}_{name}"], n_boot))
                        for name, title in MEASURES.items()}})
    return pd.DataFrame(rows)


def plot_phase(seeds: pd.DataFrame, path: Path, n_boot: int = 1000) -> None:
    """A panel a measure against the toxic share, one line a configuration, 95 % bootstrap error bars."""
    primary = primary_toxicity(seeds)
    colour = colours(sorted(seeds["configuration"].unique()))
    title = f"phase diagram: {TOXICITIES[primary]} at matched cost over the configurations x the toxic share"
    with figure(path, len(MEASURES), title) as axes:
        for ax, (name, label) in zip(axes, MEASURES.items()):
            for config, frame in seeds.groupby("configuration", sort=True):
                ratios = sorted(frame["ratio"].unique())
                cells = [bootstrap_mean(frame.loc[frame["ratio"].eq(r), f"curve_{primary}_{name}"], n_boot) for r in ratios]
                mean = np.array([c.mean for c in cells])
                error = np.array([[c.mean - c.low for c in cells], [c.high - c.mean for c in cells]])
                ax.errorbar(ratios, mean, yerr=error, marker="o", capsize=3, color=colour[config],
                            label=f"{config} (n={frame.groupby('ratio').size().min()} a ratio)")
            ax.axhline(0, color="0.6", linewidth=0.8)
            ax.set(xlabel="toxic share of pre-training data (%)", ylabel=f"{TOXICITIES[primary]} {label}")
            ax.grid(alpha=0.3)


def phase_section(curves: pd.DataFrame, folder: Path, ce_budget: float,
                  min_well_formed: float) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """The phase table and figure, by title, where the curves span several configurations."""
    seeds = phase_seeds(curves, ce_budget, min_well_formed)
    if seeds.empty:
        return {}, []
    plot_phase(seeds, folder / "phase.png")
    title = (f"{PHASE_TITLE}: the mass-mean curves read at CE +{ce_budget:g} nats by configuration and toxic share "
             "(mean [95 % bootstrap interval] over seeds)")
    return {title: phase_table(seeds)}, [folder / "phase.png"]
