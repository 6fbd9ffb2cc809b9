"""The comparison table: every finished job of a study from MLflow, one row per (ratio, method,
strength), each metric as mean ± std over seeds, with the number of seeds.

    detox-table                                   # the default store outputs/mlflow.db
    detox-table --tracking-uri sqlite:///path/mlflow.db --experiment detox --csv table.csv --plot ratio.png
"""

from __future__ import annotations

import argparse

import mlflow
import pandas as pd

from detox.plots import pyplot

GROUP_BY = ("ratio", "method", "strength")
METRICS = {  # metric -> column title (the paper's Table 1 layout, then the calibration target)
    "toxigen": "ToxiGen %",
    "rtp_expected_max_toxicity": "RTP exp.max %",
    "rtp_toxicity_probability": "RTP prob %",
    "rtp_sample_toxicity": "RTP sample %",
    "ce_loss": "CE loss",
    "implied_toxigen": "implied ToxiGen %",
}


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished runs of `experiment` as a DataFrame (one row per run), or an empty one."""
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    return mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")


def comparison_table(runs: pd.DataFrame, metrics: dict[str, str] = METRICS) -> pd.DataFrame:
    """Aggregate runs over seeds: one row per (ratio, method, strength) and setting.

    Runs are pooled only when they share `params.setting` (everything that determines the result
    but the seed): runs whose configs differ in anything else (say model.n_layers) get rows of their
    own, with the values that tell them apart as extra columns.
    """
    keys = [f"params.{k}" for k in GROUP_BY]
    if runs.empty or any(k not in runs for k in keys + ["params.setting"]):
        return pd.DataFrame()
    runs = runs[runs["params.setting"].notna()]
    runs = runs.assign(**{"params.ratio": runs["params.ratio"].astype(float)})
    config = [c for c in runs if c.startswith("params.cfg.")]
    telling = [c for c in config if any(
        frame[c].nunique(dropna=False) > 1 and (frame.groupby("params.setting")[c].nunique(dropna=False) == 1).all()
        for _, frame in runs.groupby(keys))]
    rows = []
    for group, frame in runs.groupby(keys + ["params.setting"] + telling, sort=True, dropna=False):
        row = {key.removeprefix("params.cfg.").removeprefix("params."): value
               for key, value in zip(keys + ["params.setting"] + telling, group)}
        del row["setting"]
        row["seeds"] = frame["params.seed"].nunique()
        for metric, title in metrics.items():
            values = frame.get(f"metrics.{metric}", pd.Series(dtype=float)).dropna()
            row[title] = f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}" \
                if len(values) else "-"
        rows.append(row)
    table = pd.DataFrame(rows)
    table["ratio"] = table["ratio"].map(lambda r: f"{r:g}")
    return table


def plot_against_ratio(runs: pd.DataFrame, path: str) -> None:
    """Toxicity and CE loss against the toxic share, one line per (method, strength), mean ± std over seeds."""
    plt = pyplot()
    runs = runs.assign(ratio=runs["params.ratio"].astype(float))
    panels = [("toxigen", "ToxiGen-like toxicity %"), ("rtp_toxicity_probability", "RTP-like toxicity probability %"),
              ("ce_loss", "CE loss (held-out clean)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for (method, strength), frame in runs.groupby(["params.method", "params.strength"]):
        label = method if strength == "-" else f"{method} ({strength})"
        for ax, (metric, title) in zip(axes, panels):
            stats = frame.groupby("ratio")[f"metrics.{metric}"].agg(["mean", "std"]).fillna(0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label)
    if "metrics.implied_toxigen" in runs:
        implied = runs.groupby("ratio")["metrics.implied_toxigen"].mean()
        axes[0].plot(implied.index, implied.values, "k--", label="implied by the data")
    for ax, (_, title) in zip(axes, panels):
        ax.set(xlabel="toxic share of pre-training tokens (%)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(tracking_uri: str, experiment: str, plot: str | None = None) -> pd.DataFrame:
    runs = load_runs(tracking_uri, experiment)
    table = comparison_table(runs)
    if table.empty:
        print(f"No finished study runs in experiment {experiment!r} at {tracking_uri}")
    else:
        print(f"Experiment {experiment!r} at {tracking_uri} (mean ± std over seeds):")
        print(table.to_string(index=False))
        if plot:
            plot_against_ratio(runs, plot)
            print(f"Plot: {plot}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    parser.add_argument("--experiment", default="detox")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--plot", help="also plot toxicity and CE loss against the ratio into this PNG file")
    args = parser.parse_args(argv)
    table = print_table(args.tracking_uri, args.experiment, args.plot)
    if args.csv and not table.empty:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
