"""The report's figures: toxicity against the toxic share (the paper's "smile"), CE loss against
toxicity (the trade-off), the best-ratio search's trials, and the per-head probe accuracies of two
ratios (histograms with the shift test) and per ratio (layer x head heat maps)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from detox.core import contract, paper
from detox.core.plots import pyplot
from detox.report.runs import load_probe_accuracies, ratio_label
from detox.report.stats import ShiftTest, compare_probe_accuracies
from detox.report.tables import TABLE1, Column


@contextmanager
def figure(path: Path, panels: int = 1, title: str | None = None, panel_size=(5.0, 4.0)) -> Iterator[list]:
    """A row of `panels` axes, saved to `path` as PNG and closed on exit (matplotlib's Agg backend)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(panel_size[0] * panels, panel_size[1]), squeeze=False,
                             layout="constrained")  # makes room for titles, legends and colour bars
    try:
        yield list(axes[0])
        if title:
            fig.suptitle(title, fontsize=10)
        legend = {}  # label -> handle, over all panels: one legend beside them
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        if legend:
            fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def colours(variants: Sequence[str]) -> dict[str, str]:
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {variant: cycle[i % len(cycle)] for i, variant in enumerate(variants)}


def toxicity_metrics(agg: pd.DataFrame) -> list[Column]:
    """The toxicity measures the figures plot: the insult probability when logged, and ToxiGen."""
    by_metric = {c.metric: c for c in TABLE1}
    return [by_metric[m] for m in (contract.INSULT_PROBABILITY, contract.TOXIGEN)
            if f"{m} n" in agg and agg[f"{m} n"].gt(0).any()]


def figures_section(agg: pd.DataFrame, search: pd.DataFrame | None, folder: Path) -> list[Path]:
    """The smile and the trade-off (when a toxicity was measured) and the search's trials (when there
    was a search), written to `folder`."""
    files = []
    if toxicity_metrics(agg):
        for name, plot in (("toxicity_vs_ratio.png", plot_smile), ("ce_vs_toxicity.png", plot_tradeoff)):
            plot(agg, folder / name)
            files.append(folder / name)
    if search is not None:
        plot_search(search, folder / "search_trials.png")
        files.append(folder / "search_trials.png")
    return files


def plot_smile(agg: pd.DataFrame, path: Path) -> None:
    """Toxicity against the toxic share, one line per variant, error bars one std over seeds; the
    dashed line is what the data itself implies (synthetic world)."""
    panels = toxicity_metrics(agg)
    colour = colours(list(dict.fromkeys(agg["variant"])))
    with figure(path, len(panels), "toxicity against the toxic share of pre-training data") as axes:
        for ax, column in zip(axes, panels):
            m = column.metric
            for variant, rows in agg[agg[f"{m} n"].gt(0)].groupby("variant", sort=False):
                ax.errorbar(rows["ratio"], rows[f"{m} mean"], yerr=rows[f"{m} std"].fillna(0), marker="o", capsize=3,
                            color=colour[variant], label=variant)
            implied = f"{contract.IMPLIED[m]} mean"
            if implied in agg and agg[implied].notna().any():
                target = agg.groupby("ratio")[implied].mean().dropna()
                ax.plot(target.index, target.values, "k--", label="implied by the data")
            ax.set(xlabel="toxic share of pre-training tokens (%)", ylabel=column.title, title=column.title)
            ax.grid(alpha=0.3)


def plot_tradeoff(agg: pd.DataFrame, path: Path) -> None:
    """CE loss against toxicity: one point per (ratio, method, strength), error bars both ways, points
    of one variant joined in ratio order and labelled with their ratio."""
    panels = toxicity_metrics(agg)
    colour = colours(list(dict.fromkeys(agg["variant"])))
    with figure(path, len(panels), "language ability against toxicity (lower left is better)") as axes:
        for ax, column in zip(axes, panels):
            m = column.metric
            for variant, rows in agg[agg[f"{m} n"].gt(0) & agg["ce_loss n"].gt(0)].groupby("variant", sort=False):
                ax.errorbar(rows[f"{m} mean"], rows["ce_loss mean"], xerr=rows[f"{m} std"].fillna(0),
                            yerr=rows["ce_loss std"].fillna(0), fmt="o-", capsize=3, color=colour[variant], label=variant)
                for x, y, ratio in zip(rows[f"{m} mean"], rows["ce_loss mean"], rows["ratio"]):
                    ax.annotate(ratio_label(ratio), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set(xlabel=column.title, ylabel="CE loss (held-out clean text, nats)")
            ax.grid(alpha=0.3)


def plot_search(table: pd.DataFrame, path: Path) -> None:
    """Every trial of the search: the toxicity after the method against the ratio, coloured by alpha
    within the CE budget and marked x beyond it; the unsteered toxicity of the same models in grey."""
    ratio = table["toxic share %"].astype(float)
    alpha = pd.to_numeric(table["alpha"], errors="coerce")
    feasible = table["within budget"].eq("yes")
    with figure(path, 1, "best-ratio search: every trial", panel_size=(6.5, 4.5)) as (ax,):
        ax.scatter(ratio, table["unsteered %"], color="0.6", marker="_", s=150, label="unsteered")
        ax.scatter(ratio[~feasible], table["toxicity % after"][~feasible], color="tab:red", marker="x",
                   label="beyond the CE budget")
        if alpha.notna().all() and alpha.nunique() > 1:  # one alpha (a curve_drop search): nothing to colour by
            points = ax.scatter(ratio[feasible], table["toxicity % after"][feasible], c=alpha[feasible], cmap="viridis",
                                vmin=alpha.min(), vmax=alpha.max(), label="within it")
            ax.figure.colorbar(points, ax=ax, label="ITI alpha")
        else:
            ax.scatter(ratio[feasible], table["toxicity % after"][feasible], label="within it")
        best = table.iloc[0]
        ax.annotate("best", (float(best["toxic share %"]), best["toxicity % after"]), textcoords="offset points", xytext=(6, -12))
        ax.set(xlabel="toxic share of pre-training tokens (%)", ylabel="toxicity after the method (%)")
        ax.grid(alpha=0.3)


# ---------------------------------------------------------------- probe accuracies

def probe_section(client: MlflowClient, runs: pd.DataFrame, compare_ratios: tuple[float, float], n_boot: int,
                  folder: Path) -> tuple[list[str], list[Path]]:
    """The probe figures of the runs' logged accuracies and the lines that describe them: the heat
    maps per ratio, and the histograms and shift test of `compare_ratios` when both were probed."""
    probes = load_probe_accuracies(client, runs)
    if not probes:
        return [], []
    shapes = {ratio: {a.shape for a in arrays} for ratio, arrays in probes.items()}
    if any(len(s) > 1 for s in shapes.values()):
        return [f"Probe figures skipped: probe accuracies of different shapes within one ratio {shapes} "
                "(several model settings in one experiment)."], []
    stacks = {ratio: np.stack(arrays) for ratio, arrays in probes.items()}
    heatmaps = folder / "probe_heatmaps.png"
    plot_probe_heatmaps(stacks, heatmaps)
    lines, files = [f"![probe heat maps]({heatmaps.name})"], [heatmaps]
    first, second = compare_ratios
    if first in stacks and second in stacks and min(len(stacks[first]), len(stacks[second])) < 2:
        lines.insert(0, f"No probe comparison: its unit is the model (seed), 2 a ratio at least; ratios "
                        f"{ratio_label(first)} and {ratio_label(second)} have {len(stacks[first])} and {len(stacks[second])}.")
    elif first in stacks and second in stacks:
        test = compare_probe_accuracies(stacks[first], stacks[second], n_boot)
        histograms = folder / "probe_histograms.png"
        plot_probe_histograms(stacks[first], stacks[second], (first, second), test, histograms)
        lines = [f"Probe accuracy of each model's 90th-percentile head, ratio {ratio_label(second)} against "
                 f"{ratio_label(first)} (seeds the unit: {len(stacks[second])} against {len(stacks[first])}): Hodges-Lehmann shift {100 * test.shift:+.2f} percentage points, bootstrap 95 % CI "
                 f"[{100 * test.ci_low:.2f}, {100 * test.ci_high:.2f}], two-sided Mann-Whitney p = {test.p_value:.2g}. "
                 + paper.PROBES.describe(compare_ratios), f"![probe histograms]({histograms.name})"] + lines
        files.append(histograms)
    else:
        lines.insert(0, f"No probe histograms: ratios with probe accuracies are {sorted(stacks)}, "
                        f"--compare-ratios asked for {first:g} and {second:g}.")
    return lines, files


def plot_probe_histograms(first: np.ndarray, second: np.ndarray, ratios: tuple[float, float], test: ShiftTest,
                          path: Path) -> None:
    """The per-head probe accuracies of two ratios, pooled over seeds, overlaid."""
    title = (f"probe accuracy per head, ratio {ratio_label(ratios[1])} vs {ratio_label(ratios[0])}; each model's "
             f"90th-percentile head: shift {100 * test.shift:+.2f} pp,\n95 % CI [{100 * test.ci_low:.2f}, {100 * test.ci_high:.2f}], "
             f"Mann-Whitney p = {test.p_value:.2g}; paper ({paper.PROBES.ratios[1]:g} vs {paper.PROBES.ratios[0]:g}): "
             f"p = {paper.PROBES.p_value:g}")
    bins = np.linspace(min(first.min(), second.min()), max(first.max(), second.max()) + 1e-9, 21)
    with figure(path, 1, title, panel_size=(8.0, 4.5)) as (ax,):
        for values, ratio in ((first, ratios[0]), (second, ratios[1])):
            ax.hist(np.ravel(values), bins=bins, alpha=0.5, density=True,
                    label=f"ratio {ratio_label(ratio)} % ({np.size(values)} heads)")
        ax.set(xlabel="validation accuracy of the head's linear probe", ylabel="density")


def plot_probe_heatmaps(stacks: dict[float, np.ndarray], path: Path) -> None:
    """Layer x head probe accuracy, mean over seeds, one panel a ratio, one colour scale."""
    means = {ratio: stack.mean(axis=0) for ratio, stack in stacks.items()}
    low, high = min(m.min() for m in means.values()), max(m.max() for m in means.values())
    with figure(path, len(means), "probe accuracy per attention head (mean over seeds)", panel_size=(4.0, 4.0)) as axes:
        for ax, (ratio, mean) in zip(axes, means.items()):
            image = ax.imshow(mean, vmin=low, vmax=high, cmap="viridis", origin="lower", aspect="auto")
            ax.set(title=f"ratio {ratio_label(ratio)} % (n={len(stacks[ratio])})", xlabel="head", ylabel="layer",
                   xticks=range(mean.shape[1]), yticks=range(mean.shape[0]))
        axes[-1].figure.colorbar(image, ax=axes, shrink=0.8)
