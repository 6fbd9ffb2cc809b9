"""The paper's tables and figures from MLflow, for one experiment of the study.

    detox-report                                  # the default store outputs/mlflow.db, experiment detox
    detox-report --tracking-uri http://127.0.0.1:5000 --experiment detox --out report/ --compare-ratios 0 25
    detox-table [--tracking-uri URI] [--experiment NAME] [--csv FILE] [--plot FILE]   # Table 1 only

The report reads every FINISHED study run of the experiment and writes, to `--out` (default
`outputs/report/<experiment>`), `report.md`, one CSV a table and the figures, prints the tables, and
keeps them as artifacts of one summary run named "report" (tag `detox.summary=true`) in the
experiment: a second report re-writes that run, and no aggregation ever reads it.

- Table 1 (the paper's layout): one row per (ratio, method, ITI strength, setting), each metric as
  mean ± std over seeds with their number n; beside it the paper's number where the paper has the
  same (ratio, method, strength), in columns marked "paper". The paper's "RTP" column does not say
  which RealToxicityPrompts statistic it reports, so "paper RTP" sits beside both of ours (expected
  maximum toxicity and toxicity probability).
- The ratio x method ablation: one pivot a metric (ratio rows, method columns), with the paper's
  SFT/DPO ablation beside; the GCG table where GCG metrics exist; the probes' summary metrics.
- Figures: toxicity against the toxic share (the paper's "smile"), CE loss against toxicity (the
  trade-off), per-head probe accuracies of two ratios as histograms (with a Mann-Whitney test and a
  bootstrap CI of the Hodges-Lehmann shift), and layer x head probe-accuracy heat maps per ratio.
- Where the paper's rivals ran beside it (experiment=rivals, `rivals`): every method at matched cost
  against the paper's recipe (Holm-corrected), the fine-tuning attack's table and figure (tamper.*),
  the training dynamics figure (trainer.snapshots).
- Where method=iti_curve runs logged trade-off curves: the frontier figure and table (read at
  --ce-budget off each curve by interpolation; absolute and relative measures, bootstrap intervals),
  and the power table of every claim (`frontier`); where their base models come in several
  configurations (a world knob swept beside the ratio), the phase diagram (`phase`).

Runs are seeds of one configuration, and pooled, when they share their `setting` param (a hash of
everything that determines the result except the seed); runs logged without it are pooled when their
`cfg.*` params agree. Every other param and metric is read by its name in `detox.core.contract`: ITI
at matched cost compares each steering with the method=none run of its `base_model` and tells the
random control by `iti_direction`; the search table shows `iti_alpha`.

The package by concern: `runs` (the finished runs, seed pools, aggregation, logged probe accuracies),
`stats` (the probe shift test), `tables`, `figures`, `frontier` (the curves and the power statements),
`phase` (the phase diagram), `rivals` (the rivals table, the attack and the dynamics),
`summary` (the summary run); here the configuration, the report composed of their sections, and the
command lines. The report imports MLflow, pandas and detox.core, never torch, a stage, a method or the
job config: its statistics and the curves' format live in detox.core (`stats`, `tradeoff`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from detox.core import paper
from detox.core.redact import redact, to_environment
from detox.core.schema import ConfigError
from detox.core.tradeoff import DEFAULT_CE_BUDGET, DEFAULT_MIN_WELL_FORMED
from detox.report.figures import (
    figures_section,
    plot_smile,
    probe_section,
    toxicity_metrics,
)
from detox.report.frontier import frontier_section, load_curves
from detox.report.phase import phase_section
from detox.report.rivals import rivals_section
from detox.report.runs import aggregate, load_runs, ratio_label
from detox.report.summary import SUMMARY_RUN_NAME, write_summary_run
from detox.report.tables import (
    PAPER_UNITS,
    SEARCH_TITLE,
    TABLE1_TITLE,
    grouped_view,
    markdown,
    report_tables,
    scorer_note,
    table1s,
)


@dataclass
class ReportConfig:
    tracking_uri: str = "sqlite:///outputs/mlflow.db"  # any MLflow tracking URI: sqlite:///FILE or http://HOST:PORT
    experiment: str = "detox"  # the MLflow experiment of the study
    out: str = ""  # folder for report.md, the CSVs and PNGs; empty: outputs/report/<experiment>
    # the two ratios of the probe histograms and test; default the paper's pair as secondary sources read it
    compare_ratios: tuple[float, float] = paper.PROBES.ratios
    summary_run: bool = True  # keep the report as artifacts of the experiment's summary run
    ce_budget: float = DEFAULT_CE_BUDGET  # ITI at matched cost: the most CE (nats, clean and hostile) a steering may add
    min_well_formed: float = DEFAULT_MIN_WELL_FORMED  # ... and the fewest well-formed generations (%) it may leave
    n_boot: int = 1000  # bootstrap resamples of the probe test's confidence interval
    frontier_max_cost: float = 0.25  # the frontier figure's CE-cost axis ends here (nats)

    def folder(self) -> Path:
        return Path(self.out or f"outputs/report/{self.experiment}")


@dataclass
class Report:
    runs: int  # finished study runs read
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # title -> table as displayed
    text: str = ""  # what the terminal shows
    files: list[Path] = field(default_factory=list)  # everything written to the folder
    summary_run_id: str | None = None
    scorers: list[str] = field(default_factory=list)  # the scorers (at their versions) of the runs, each tabled apart


def check(cfg: ReportConfig) -> None:
    """Bad input, before any work."""
    if cfg.tracking_uri.startswith("sqlite:///") and not Path(cfg.tracking_uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"--tracking-uri {cfg.tracking_uri}: no such sqlite file (run a study first)")
    if len(cfg.compare_ratios) != 2 or cfg.compare_ratios[0] == cfg.compare_ratios[1]:
        raise ConfigError(f"--compare-ratios {' '.join(map(ratio_label, cfg.compare_ratios))}: give two different ratios")
    if cfg.n_boot < 1:
        raise ConfigError(f"n_boot={cfg.n_boot}: needs at least one bootstrap resample")
    if not cfg.frontier_max_cost > 0:
        raise ConfigError(f"--frontier-max-cost {cfg.frontier_max_cost:g}: the frontier's cost axis needs a positive end")


def build_report(cfg: ReportConfig, log=print) -> Report:
    """Read the experiment, write the report's folder (and its summary run) and print it."""
    check(cfg)
    uri = to_environment(cfg.tracking_uri)  # MLflow gets an http(s) URI without its credentials
    runs = load_runs(uri, cfg.experiment)
    if runs.empty:
        log(f"No finished study runs in experiment {cfg.experiment!r} at {redact(cfg.tracking_uri)}")
        return Report(runs=0)
    client = MlflowClient(uri)
    folder = cfg.folder()
    folder.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    report = Report(runs=len(runs), tables=report_tables(runs, agg, cfg.ce_budget, cfg.min_well_formed),
                    scorers=list(dict.fromkeys(agg["scorer"])))
    curves = load_curves(client, runs)
    curve_tables, curve_figures = frontier_section(curves, runs, folder, cfg.ce_budget, cfg.min_well_formed,
                                                   cfg.frontier_max_cost, cfg.compare_ratios[0])
    report.tables.update(curve_tables)
    phase_tables, phase_figures = phase_section(curves, folder, cfg.ce_budget, cfg.min_well_formed)
    report.tables.update(phase_tables)
    curve_figures += phase_figures
    rival_tables, rival_figures = rivals_section(client, runs, folder)
    report.tables.update(rival_tables)
    curve_figures += rival_figures
    report.files = write_csvs(agg, report.tables, folder)
    search = report.tables.get(SEARCH_TITLE)
    figures = figures_section(agg, search, folder) + curve_figures
    probe_lines, probe_files = probe_section(client, runs, cfg.compare_ratios, cfg.n_boot, folder)
    report.files += figures + probe_files
    terminal, md = write_text(cfg, report, figures, probe_lines, search)
    (folder / "report.md").write_text("\n".join(md) + "\n")
    report.files.insert(0, folder / "report.md")
    if cfg.summary_run:
        experiment_id = client.get_experiment_by_name(cfg.experiment).experiment_id
        report.summary_run_id = write_summary_run(client, experiment_id, folder, len(runs))
        terminal.append(f"Summary run {report.summary_run_id} (name {SUMMARY_RUN_NAME!r}) holds the report.")
    terminal.append(f"Report: {folder / 'report.md'} ({len(report.files)} files)")
    report.text = "\n".join(terminal)
    log(report.text)
    return report


def write_csvs(agg: pd.DataFrame, tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """table1.csv (numbers, not strings: mean, std, n of every metric and the paper's) and one CSV for
    every other table as displayed."""
    csv = folder / "table1.csv"
    agg.assign(ratio=agg["ratio"].map(ratio_label)).to_csv(csv, index=False)
    files = [csv]
    for title, table in list(tables.items())[1:]:
        path = folder / (re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".csv")
        table.to_csv(path, index=False)
        files.append(path)
    return files


def write_text(cfg: ReportConfig, report: Report, figures: list[Path], probe_lines: list[str],
               search: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """The report as terminal lines and as markdown lines."""
    notes = (f"Columns marked \"paper\": {paper.SOURCE} (OLMo-1B on C4 + 4chan; a reference for the shape of the "
             "results). The paper does not say which RTP statistic its Table 1 reports: \"paper RTP\" sits beside "
             "both of ours. " + PAPER_UNITS + " " + scorer_note(report.scorers))
    heading = (f"Table 1 of experiment {cfg.experiment!r} at {redact(cfg.tracking_uri)}, {report.runs} finished runs "
               f"scored by {'; '.join(report.scorers)} (mean ± std over seeds):")
    firsts = [title for title in report.tables if title.startswith(TABLE1_TITLE)]  # one a scorer
    terminal = [heading]
    for title in firsts:
        terminal += ([f"{title}:"] if len(firsts) > 1 else []) + [grouped_view(report.tables[title]).to_string(index=False)]
    terminal.append(notes)
    md = [f"# Report of experiment `{cfg.experiment}`", "", f"{report.runs} finished study runs at `{redact(cfg.tracking_uri)}`; "
          "cells are mean ± std over seeds, (n=k) where fewer than the row's n runs logged the metric.", "", notes]
    for title, table in report.tables.items():
        md += ["", f"## {title}", "", markdown(grouped_view(table))]
        if title not in firsts:
            terminal += ["", f"{title}:", grouped_view(table).to_string(index=False)]
    md += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""] + probe_lines
    terminal += [""] + [line for line in probe_lines if not line.startswith("![")]
    if search is not None:
        best = search.iloc[0]
        line = (f"Best-ratio search ({len(search)} trials): ratio {best['toxic share %']} % (alpha {best['alpha']}, seed {best['seed']}) "
                f"reached {best['toxicity % after']} % against {best['unsteered %']} % unsteered at CE cost "
                f"{best['CE cost (nats)']:+.3f} nats" + ("" if best["within budget"] == "yes" else ": no trial stayed within the budget"))
        terminal.append(line)
        md += ["", line]
    return terminal, md


def print_table(tracking_uri: str, experiment: str, plot: str | None = None) -> pd.DataFrame:
    """Table 1 alone, printed (and the toxicity-against-ratio figure, when asked)."""
    runs = load_runs(to_environment(tracking_uri), experiment)
    agg = aggregate(runs)
    if agg.empty:
        print(f"No finished study runs in experiment {experiment!r} at {redact(tracking_uri)}")
        return pd.DataFrame()
    tables = table1s(agg)
    print(f"Experiment {experiment!r} at {redact(tracking_uri)}, scored by {'; '.join(dict.fromkeys(agg['scorer']))} "
          "(mean ± std over seeds):")
    for title, table in tables.items():
        print(*([f"{title}:"] if len(tables) > 1 else []), grouped_view(table).to_string(index=False), sep="\n")
    table = pd.concat(tables.values(), keys=list(tables), names=["table"]).reset_index(0) if len(tables) > 1 else \
        next(iter(tables.values()))
    if plot and toxicity_metrics(agg):
        plot_smile(agg, Path(plot))
        print(f"Plot: {plot}")
    return table


def main(argv: list[str] | None = None) -> None:
    """detox-report."""
    parser = argparse.ArgumentParser(prog="detox-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=ReportConfig.tracking_uri, help="MLflow tracking URI")
    parser.add_argument("--experiment", default=ReportConfig.experiment)
    parser.add_argument("--out", default="", help="output folder (default outputs/report/<experiment>)")
    parser.add_argument("--compare-ratios", nargs=2, type=float, default=ReportConfig.compare_ratios,
                        metavar=("RATIO", "RATIO"), help="the two ratios of the probe histograms and test (default 0 25)")
    parser.add_argument("--no-summary-run", action="store_true", help="do not write the experiment's summary run")
    parser.add_argument("--ce-budget", type=float, default=ReportConfig.ce_budget,
                        help=f"ITI at matched cost: the most CE (nats) a steering may add (default {ReportConfig.ce_budget:g})")
    parser.add_argument("--min-well-formed", type=float, default=ReportConfig.min_well_formed,
                        help=f"ITI at matched cost: the fewest well-formed generations (%%) a steering may leave (default {ReportConfig.min_well_formed:g})")
    parser.add_argument("--frontier-max-cost", type=float, default=ReportConfig.frontier_max_cost,
                        help=f"the frontier figure's CE-cost axis ends here, nats (default {ReportConfig.frontier_max_cost:g})")
    args = parser.parse_args(argv)
    cfg = ReportConfig(args.tracking_uri, args.experiment, args.out, tuple(args.compare_ratios), not args.no_summary_run,
                       ce_budget=args.ce_budget, min_well_formed=args.min_well_formed,
                       frontier_max_cost=args.frontier_max_cost)
    try:
        build_report(cfg)
    except ConfigError as error:
        parser.error(str(error))


def table_main(argv: list[str] | None = None) -> None:
    """detox-table: Table 1 only."""
    parser = argparse.ArgumentParser(prog="detox-table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=ReportConfig.tracking_uri)
    parser.add_argument("--experiment", default=ReportConfig.experiment)
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--plot", help="also plot toxicity against the ratio into this PNG file")
    args = parser.parse_args(argv)
    table = print_table(args.tracking_uri, args.experiment, args.plot)
    if args.csv and not table.empty:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
