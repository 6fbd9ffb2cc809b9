"""The paper's tables and figures from MLflow, for one experiment of the study.

    detox-report                                  # the default store outputs/mlflow.db, experiment detox
    detox-report --tracking-uri http://127.0.0.1:5000 --experiment detox --out report/ --compare-ratios 0 10
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

Runs are seeds of one configuration, and pooled, when they share their `setting` param (a hash of
everything that determines the result except the seed); runs logged without it are pooled when their
`cfg.*` params agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from detox.core import paper
from detox.config import ConfigError, SearchConfig
from detox.core.plots import pyplot
from detox.core.progress import progress
from detox.search import within_budget

SUMMARY_TAG = "detox.summary"  # marks the report's own run, which every aggregation skips
SUMMARY_RUN_NAME = "report"
SUMMARY_FOLDER = "report"  # the summary run's artifact folder, replaced as a whole on each report
PROBE_ARTIFACT = "probe_accuracy.json"
METHOD_ORDER = ("none", "prompting", "iti", "meda", "inst", "sft", "dpo")  # the paper's Table 1 order
STRENGTH_ORDER = ("-", "weak", "mid", "strong")
UNIQUE_CFG = ("params.cfg.seed", "params.cfg.ratio")  # cfg params that differ between seeds and ratios by design
# the cfg params that determine a base model (the stages up to pre-training): a steering's own base model shares them
BASE_MODEL_PARAMS = tuple(f"params.cfg.{stage}." for stage in ("sources", "tokenizer", "mixture", "pretrain"))
SEARCH_TITLE = "Best-ratio search: trials, best first"


@dataclass(frozen=True)
class Column:
    """A metric column of a table."""

    metric: str  # the MLflow metric key
    title: str  # the column title
    always: bool = False  # shown even when no run logged the metric
    paper: str | None = None  # the `paper.PaperRow` field shown right after this column


PAPER_TITLES = {"toxigen": "paper ToxiGen", "rtp": "paper RTP", "ce_loss": "paper CE loss"}
TABLE1 = (
    Column("toxigen", "ToxiGen %", always=True, paper="toxigen"),
    Column("rtp_expected_max_toxicity", "RTP exp.max %", always=True),
    Column("rtp_toxicity_probability", "RTP prob %", always=True, paper="rtp"),  # "paper RTP" beside both RTP columns
    Column("ce_loss", "CE loss", always=True, paper="ce_loss"),
    Column("insult_probability", "insult prob %"),
    Column("well_formed", "well-formed %"),
    Column("ce_hostile", "hostile CE"),
    Column("rtp_sample_toxicity", "RTP sample %"),
    Column("implied_toxigen", "implied ToxiGen %"),
    Column("implied_insult_probability", "implied insult %"),
)
ABLATION = TABLE1[:7]  # the pivots: the paper's metrics and the new behavioural ones, not the calibration targets
GCG = (Column("gcg_success", "GCG success %"), Column("gcg_success_iti", "GCG success with ITI %"))
PROBES = (Column("probe_best_accuracy", "best probe accuracy"), Column("probe_mean_accuracy", "mean probe accuracy"),
          Column("probe_label_ceiling", "label ceiling"),
          Column("entanglement_best_head", "entanglement (best head)"),
          Column("entanglement_mean", "entanglement (mean head)"),
          Column("entanglement_random_level", "random level"))
METRICS = tuple(dict.fromkeys(c.metric for c in TABLE1 + GCG + PROBES))


# ---------------------------------------------------------------- runs and their aggregation

def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The study jobs' runs of a `search_runs` frame: not the summary run, not other tasks."""
    if runs.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    if f"tags.{SUMMARY_TAG}" in runs:
        keep &= runs[f"tags.{SUMMARY_TAG}"].ne("true")
    if "params.task" in runs:
        keep &= runs["params.task"].fillna("study").eq("study")
    for key in ("params.ratio", "params.method", "params.strength"):
        keep &= runs[key].notna() if key in runs else False
    return runs[keep]


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished study runs of `experiment` (one row per run), or an empty frame."""
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    return study_runs(runs)


def seed_pools(runs: pd.DataFrame) -> pd.Series:
    """Which configuration each run is a seed of: its `setting` param or, for runs without one, the
    values of the `cfg.*` params that vary between those runs."""
    setting = runs["params.setting"] if "params.setting" in runs else pd.Series(None, index=runs.index, dtype=object)
    legacy = setting.isna()
    config = [c for c in runs if c.startswith("params.cfg.") and c not in UNIQUE_CFG]
    varying = [c for c in config if runs.loc[legacy, c].fillna("<unset>").nunique() > 1]
    values = runs[varying].fillna("<unset>").astype(str)
    fallback = values.apply(lambda row: " ".join(f"{k}={v}" for k, v in row.items()), axis=1) if varying else ""
    return setting.where(~legacy, "cfg: " + pd.Series(fallback, index=runs.index))


def distinguishing_params(runs: pd.DataFrame, pools: pd.Series) -> tuple[list[str], bool]:
    """The cfg params that tell apart the configurations of one (ratio, method, strength) (each
    constant within a configuration, different between two), and whether they tell all apart."""
    config = [c for c in runs if c.startswith("params.cfg.") and c not in UNIQUE_CFG]
    found, separated = [], True
    for _, frame in runs.groupby(["params.ratio", "params.method", "params.strength"]):
        if pools[frame.index].nunique() == 1:
            continue
        values = frame[config].fillna("<unset>").groupby(pools[frame.index])
        constant = [c for c in config if values[c].nunique().max() == 1]
        telling = [c for c in constant if values[c].first().nunique() > 1]
        found += [c for c in telling if c not in found]
        separated &= not values[telling].first().duplicated().any() if telling else False
    return found, separated


def natural_key(text: str) -> tuple:
    """Sort "alpha=2" before "alpha=10"."""
    return tuple((0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
                 for part in re.split(r"(\d+(?:\.\d+)?)", text) if part)


def order_key(method: str, strength: str) -> tuple:
    method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    strength_rank = STRENGTH_ORDER.index(strength) if strength in STRENGTH_ORDER else len(STRENGTH_ORDER)
    return method_rank, natural_key(method), strength_rank, natural_key(strength)


def aggregate(runs: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per (ratio, method, strength, configuration): for each metric its mean, sample std
    (ddof 1; NaN for one value) and number of values over the seeds; n, the number of runs; and the
    paper's numbers for the same (ratio, method, strength) (NaN where the paper has none).

    Columns: ratio (float), method, strength, the cfg params that tell configurations apart when a
    (ratio, method, strength) has several (or `setting`, its hash's head, when no cfg param does),
    `variant` (a label of method, strength and those params),
    n, "<metric> mean", "<metric> std", "<metric> n", "paper toxigen", "paper rtp", "paper ce_loss".
    """
    runs = study_runs(runs)
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(ratio=runs["params.ratio"].astype(float))
    pools = seed_pools(runs)
    shown, separated = distinguishing_params(runs, pools)
    show_setting = not separated  # configurations that no cfg param tells apart: by their setting hash
    rows = []
    for (ratio, method, strength, pool), frame in runs.groupby(["ratio", "params.method", "params.strength", pools]):
        row = {"ratio": ratio, "method": method, "strength": strength}
        row.update({c.removeprefix("params.cfg."): frame[c].fillna("<unset>").iloc[0] for c in shown})
        if show_setting:
            row["setting"] = pool.removeprefix("cfg: ")[:8]
        detail = " ".join(f"{c.removeprefix('params.cfg.')}={row[c.removeprefix('params.cfg.')]}" for c in shown)
        row["variant"] = " ".join(part for part in (method, "" if strength == "-" else strength,
                                                    f"[{detail}]" if detail else "") if part)
        row["n"] = len(frame)
        for metric in metrics:
            values = frame[f"metrics.{metric}"].dropna() if f"metrics.{metric}" in frame else pd.Series(dtype=float)
            row[f"{metric} mean"] = values.mean() if len(values) else np.nan
            row[f"{metric} std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric} n"] = len(values)
        reference = paper.paper_row(ratio, method, strength)
        for name in PAPER_TITLES:
            row[f"paper {name}"] = getattr(reference, name) if reference else np.nan
        rows.append(row)
    rows.sort(key=lambda r: (r["ratio"], order_key(r["method"], r["strength"]), natural_key(r["variant"])))
    return pd.DataFrame(rows)


def matched_cost_table(runs: pd.DataFrame, ce_budget: float, min_well_formed: float) -> pd.DataFrame:
    """ITI at matched cost, per ratio: for every base model (ratio, seed), the lowest insult probability
    any ITI steering of it reached while adding at most `ce_budget` nats of CE loss on clean and on
    hostile-context text and keeping `min_well_formed` % well-formed generations (the steering that
    is not allowed to break the model), for the probe directions and, apart, the random control;
    mean, std and a 95 % t-interval over seeds. Not steering (alpha 0) is always among the choices,
    so "no effect" shows as a drop of 0, never as a missing cell or a gain."""
    from scipy import stats

    runs = study_runs(runs)
    needed = ["metrics.insult_probability", "metrics.ce_loss", "metrics.ce_hostile", "metrics.well_formed"]
    if runs.empty or any(c not in runs for c in needed) or "iti" not in set(runs["params.method"]):
        return pd.DataFrame()
    # A steering is compared with its own base model: the runs whose upstream stages (sources to
    # pretrain) were configured alike, so an experiment may hold several worlds or model sizes.
    keys = [c for c in runs if c.startswith(BASE_MODEL_PARAMS)] or ["params.ratio", "params.seed", "params.model",
                                                                    "params.data"]
    runs = runs.assign(**{k: runs[k].fillna("<unset>") for k in keys})
    base = runs[runs["params.method"] == "none"].drop_duplicates(keys).set_index(keys)[needed]
    steered = runs[runs["params.method"] == "iti"].join(base, on=keys, rsuffix=" base").dropna(subset=[c + " base" for c in needed])
    if steered.empty:
        return pd.DataFrame()
    # what tells the base settings apart: the keys that vary, apart from each run's own ratio and seed
    worlds = [k for k in keys if not k.endswith((".ratio", ".seed")) and steered[k].nunique() > 1]
    steered["base setting"] = steered[worlds].apply(
        lambda row: " ".join(f"{k.removeprefix('params.cfg.')}={v}" for k, v in row.items()), axis=1) if worlds else ""
    allowed = within_budget(steered["metrics.ce_loss"] - steered["metrics.ce_loss base"],
                            steered["metrics.ce_hostile"] - steered["metrics.ce_hostile base"],
                            steered["metrics.well_formed"], ce_budget, min_well_formed)
    steered = steered.assign(control=steered["params.strength"].str.contains("random"),
                             best=steered["metrics.insult_probability"].where(allowed))

    def interval(values: pd.Series) -> str:
        values = values.dropna()
        if len(values) < 2:
            return f"{values.mean():.1f} (n={len(values)})" if len(values) else "-"
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        return f"{values.mean():.1f} ± {values.std(ddof=1):.1f} [{values.mean() - half:.1f}, {values.mean() + half:.1f}]"

    rows = []
    for (setting, ratio), frame in steered.groupby(["base setting", steered["params.ratio"].astype(float)]):
        per_model = frame.groupby(["params.seed", "control"]).agg(
            best=("best", "min"), base=("metrics.insult_probability base", "first")).reset_index()
        per_model["best"] = per_model[["best", "base"]].min(axis=1)  # not steering (alpha 0) is always allowed
        probe, random = per_model[~per_model["control"]], per_model[per_model["control"]]
        rows.append({**({"base setting": setting} if worlds else {}), "ratio": ratio_label(ratio),
                     "seeds": probe["params.seed"].nunique(),
                     "insult % without ITI": interval(probe["base"]),
                     "with ITI at matched cost": interval(probe["best"]),
                     "drop": interval(probe["base"] - probe["best"]),
                     "random control at matched cost": interval(random["best"]) if len(random) else "-",
                     "drop (random)": interval(random["base"] - random["best"]) if len(random) else "-"})
    return pd.DataFrame(rows)


def search_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The best-ratio search's trials (runs that logged `search_objective`), best first. The ratio column
    is "toxic share %" so that the grouped view (which blanks a repeated ratio) leaves it whole."""
    if "metrics.search_objective" not in runs:
        return pd.DataFrame()
    trials = runs[runs["metrics.search_objective"].notna()]
    if trials.empty:
        return pd.DataFrame()
    alpha = pd.to_numeric(trials.get("params.cfg.steer.iti.alpha", pd.Series(np.nan, index=trials.index))).round(2)
    table = pd.DataFrame({
        "toxic share %": trials["params.ratio"].astype(float).map(ratio_label), "seed": trials["params.seed"],
        "method": trials["params.method"], "alpha": alpha.astype(object).where(alpha.notna(), "-"),
        "toxicity % after": (trials["metrics.search_unsteered"] - trials["metrics.search_drop"]).round(1),
        "unsteered %": trials["metrics.search_unsteered"].round(1),
        "CE cost (nats)": trials["metrics.search_ce_cost"].round(3),
        "within budget": trials["metrics.search_feasible"].map({1.0: "yes", 0.0: "no"}),
        "objective": trials["metrics.search_objective"].round(2)})
    return table.sort_values("objective", kind="stable").reset_index(drop=True)


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
        if alpha.notna().all():
            points = ax.scatter(ratio[feasible], table["toxicity % after"][feasible], c=alpha[feasible], cmap="viridis",
                                vmin=alpha.min(), vmax=alpha.max(), label="within it")
            ax.figure.colorbar(points, ax=ax, label="ITI alpha")
        else:
            ax.scatter(ratio[feasible], table["toxicity % after"][feasible], label="within it")
        best = table.iloc[0]
        ax.annotate("best", (float(best["toxic share %"]), best["toxicity % after"]), textcoords="offset points", xytext=(6, -12))
        ax.set(xlabel="toxic share of pre-training tokens (%)", ylabel="toxicity after the method (%)")
        ax.grid(alpha=0.3)


# ---------------------------------------------------------------- tables for reading

def cell(mean: float, std: float, n: int, expected: int | None = None) -> str:
    """"mean ± std"; the mean alone for one value; "(n=k)" when fewer values than `expected`."""
    if n == 0:
        return "-"
    text = f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"
    return text if expected is not None and n == expected else f"{text} (n={n})"


def present(agg: pd.DataFrame, columns: Sequence[Column]) -> list[Column]:
    return [c for c in columns if c.always or (f"{c.metric} n" in agg and agg[f"{c.metric} n"].gt(0).any())]


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}"


def group_table(agg: pd.DataFrame, columns: Sequence[Column], paper_numbers: bool = True) -> pd.DataFrame:
    """Table 1's layout for readers: per row the group, n and one "mean ± std" cell a metric (with
    the paper's numbers beside, when asked); metrics no run logged are left out unless `always`."""
    if agg.empty:
        return pd.DataFrame()
    keys = list(agg.columns[:agg.columns.get_loc("variant")])  # ratio, method, strength, configuration
    table = agg[keys + ["n"]].assign(ratio=agg["ratio"].map(ratio_label))
    for column in present(agg, columns):
        m = column.metric
        table[column.title] = [cell(mean, std, n, expected) for mean, std, n, expected in
                               zip(agg[f"{m} mean"], agg[f"{m} std"], agg[f"{m} n"], agg["n"])] \
            if f"{m} n" in agg else "-"
        if paper_numbers and column.paper:
            table[PAPER_TITLES[column.paper]] = agg[f"paper {column.paper}"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return table


def comparison_table(runs: pd.DataFrame, columns: Sequence[Column] = TABLE1) -> pd.DataFrame:
    """Table 1 of a `search_runs` frame: one row per (ratio, method, strength, configuration)."""
    return group_table(aggregate(runs, [c.metric for c in columns]), columns)


def ablation_tables(agg: pd.DataFrame, columns: Sequence[Column] = ABLATION) -> dict[str, pd.DataFrame]:
    """Per metric a pivot: ratio rows, one column a variant (method, strength, telling cfg params),
    with "paper <variant>" columns beside where the paper has numbers. Configurations that only
    their setting hash tells apart share a cell, each marked with its setting."""
    tables = {}
    variants = sorted(dict.fromkeys(agg["variant"]), key=lambda v: (
        order_key(*agg.loc[agg["variant"].eq(v), ["method", "strength"]].iloc[0]), natural_key(v)))
    ratios = sorted(agg["ratio"].unique())
    for column in present(agg, columns):
        m = column.metric
        if f"{m} n" not in agg:
            continue
        table = pd.DataFrame({"ratio": [ratio_label(r) for r in ratios]})
        for variant in variants:
            cells = [agg[agg["variant"].eq(variant) & agg["ratio"].eq(r)] for r in ratios]
            table[variant] = ["; ".join(cell(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"])
                                        + (f" [setting={row['setting']}]" if len(rows) > 1 else "")
                                        for _, row in rows.iterrows() if row[f"{m} n"] or len(rows) == 1) for rows in cells]
            references = [rows[f"paper {column.paper}"].iloc[0] if column.paper and len(rows) else np.nan
                          for rows in cells]
            if any(pd.notna(references)):
                table[f"paper {variant}"] = ["" if pd.isna(v) else f"{v:.2f}" for v in references]
        tables[column.title] = table
    return tables


def gcg_table(agg: pd.DataFrame) -> pd.DataFrame:
    """GCG attack success per group that measured it, with the paper's rate at the same ratio."""
    if agg.empty or not present(agg, GCG):
        return pd.DataFrame()
    rows = agg[agg[[f"{c.metric} n" for c in GCG]].gt(0).any(axis=1)].reset_index(drop=True)
    table = group_table(rows, GCG, paper_numbers=False)
    references = [paper.gcg_row(ratio) for ratio in rows["ratio"]]
    for title, paper_title, attribute in (("GCG success %", "paper GCG %", "without_iti"),
                                          ("GCG success with ITI %", "paper GCG with strong ITI %", "with_strong_iti")):
        if title in table:
            table.insert(table.columns.get_loc(title) + 1, paper_title,
                         [f"{getattr(r, attribute):.1f}" if r else "" for r in references])
    return table


def probe_table(agg: pd.DataFrame) -> pd.DataFrame:
    if agg.empty or not present(agg, PROBES):
        return pd.DataFrame()
    return group_table(agg[agg[[f"{c.metric} n" for c in PROBES]].gt(0).any(axis=1)].reset_index(drop=True), PROBES)


def grouped_view(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's visual grouping: a ratio written only on the first row of its group."""
    if table.empty or "ratio" not in table:
        return table
    return table.assign(ratio=table["ratio"].where(table["ratio"].ne(table["ratio"].shift()), ""))


def markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


# ---------------------------------------------------------------- probe accuracies

@dataclass(frozen=True)
class ShiftTest:
    """Two samples compared: Mann-Whitney U and the Hodges-Lehmann shift (second minus first)."""

    p_value: float  # two-sided Mann-Whitney U
    shift: float  # Hodges-Lehmann estimate: median of all pairwise differences
    ci_low: float  # bootstrap 95 % percentile interval of the shift
    ci_high: float


def compare_probe_accuracies(first: np.ndarray, second: np.ndarray, n_boot: int = 1000, seed: int = 0) -> ShiftTest:
    """Is `second` (say the toxic model's per-head accuracies) shifted against `first`?"""
    from detox.steering.probe import compare_accuracies

    test = compare_accuracies(np.ravel(first), np.ravel(second), seed=seed, n_boot=n_boot)
    return ShiftTest(test["p_value"], test["hl_shift"], test["hl_ci_low"], test["hl_ci_high"])


def parse_probe_accuracies(value: object, where: str) -> np.ndarray:
    """A probe_accuracy.json value as an (n_layers, n_heads) array, or a one-line error naming `where`."""
    rows = value if isinstance(value, list) and value and all(isinstance(r, list) and r for r in value) else None
    if rows is None or len({len(r) for r in rows}) != 1 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in rows for v in r):
        raise ValueError(f"{where}: {PROBE_ARTIFACT} must be a list of n_layers equal-length lists of numbers")
    accuracies = np.array(rows, dtype=float)
    if not ((accuracies >= 0) & (accuracies <= 1)).all():
        raise ValueError(f"{where}: {PROBE_ARTIFACT} holds accuracies outside [0, 1]")
    return accuracies


def load_probe_accuracies(client: MlflowClient, runs: pd.DataFrame) -> dict[float, list[np.ndarray]]:
    """Per ratio, the per-head accuracies of every model probed. Runs of several methods on one
    pre-trained model log the same file; each (ratio, seed, accuracies) counts once."""
    found: dict[float, dict[tuple, np.ndarray]] = {}
    # one progress bar over the runs, not MLflow's own for every small file
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        for run_id, ratio, seed in progress(list(zip(runs["run_id"], runs["params.ratio"].astype(float), runs["params.seed"])),
                                        desc="probe accuracies", leave=False):
            if PROBE_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
                continue
            path = client.download_artifacts(run_id, PROBE_ARTIFACT, dst_path=f"{tmp}/{run_id}")
            accuracies = parse_probe_accuracies(json.loads(Path(path).read_text()), f"run {run_id}")
            found.setdefault(ratio, {})[(seed, accuracies.shape, accuracies.tobytes())] = accuracies
    return {ratio: list(models.values()) for ratio, models in sorted(found.items())}


# ---------------------------------------------------------------- figures

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
    return [by_metric[m] for m in ("insult_probability", "toxigen")
            if f"{m} n" in agg and agg[f"{m} n"].gt(0).any()]


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
            implied = f"implied_{m} mean"
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


def plot_probe_histograms(first: np.ndarray, second: np.ndarray, ratios: tuple[float, float], test: ShiftTest,
                          path: Path) -> None:
    """The per-head probe accuracies of two ratios, pooled over seeds, overlaid."""
    title = (f"probe accuracy per head, ratio {ratio_label(ratios[1])} vs {ratio_label(ratios[0])}: "
             f"shift {100 * test.shift:+.2f} pp,\n95 % CI [{100 * test.ci_low:.2f}, {100 * test.ci_high:.2f}], "
             f"Mann-Whitney p = {test.p_value:.2g}; paper (10 vs 0): p = {paper.PROBES.p_value:g}, "
             f"95 % CI [{paper.PROBES.ci_low:g}, {paper.PROBES.ci_high:g}]")
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


# ---------------------------------------------------------------- the report

@dataclass
class ReportConfig:
    tracking_uri: str = "sqlite:///outputs/mlflow.db"  # any MLflow tracking URI: sqlite:///FILE or http://HOST:PORT
    experiment: str = "detox"  # the MLflow experiment of the study
    out: str = ""  # folder for report.md, the CSVs and PNGs; empty: outputs/report/<experiment>
    compare_ratios: tuple[float, float] = (0.0, 10.0)  # the two ratios of the probe histograms and test
    summary_run: bool = True  # keep the report as artifacts of the experiment's summary run
    ce_budget: float = SearchConfig.ce_budget  # ITI at matched cost: the most CE (nats, clean and hostile) a steering may add
    min_well_formed: float = SearchConfig.min_well_formed  # ... and the fewest well-formed generations (%) it may leave
    n_boot: int = 1000  # bootstrap resamples of the probe test's confidence interval

    def folder(self) -> Path:
        return Path(self.out or f"outputs/report/{self.experiment}")


@dataclass
class Report:
    runs: int  # finished study runs read
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # title -> table as displayed
    text: str = ""  # what the terminal shows
    files: list[Path] = field(default_factory=list)  # everything written to the folder
    summary_run_id: str | None = None


def check(cfg: ReportConfig) -> None:
    """Bad input, before any work."""
    if cfg.tracking_uri.startswith("sqlite:///") and not Path(cfg.tracking_uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"--tracking-uri {cfg.tracking_uri}: no such sqlite file (run a study first)")
    if len(cfg.compare_ratios) != 2 or cfg.compare_ratios[0] == cfg.compare_ratios[1]:
        raise ConfigError(f"--compare-ratios {' '.join(map(ratio_label, cfg.compare_ratios))}: give two different ratios")
    if cfg.n_boot < 1:
        raise ConfigError(f"n_boot={cfg.n_boot}: needs at least one bootstrap resample")


def probe_section(client: MlflowClient, runs: pd.DataFrame, cfg: ReportConfig, folder: Path) -> tuple[list[str], list[Path]]:
    """The probe figures and the lines that describe them."""
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
    first, second = cfg.compare_ratios
    if first in stacks and second in stacks:
        test = compare_probe_accuracies(stacks[first], stacks[second], cfg.n_boot)
        histograms = folder / "probe_histograms.png"
        plot_probe_histograms(stacks[first], stacks[second], (first, second), test, histograms)
        lines = [f"Per-head probe accuracy, ratio {ratio_label(second)} against {ratio_label(first)} (pooled over seeds): "
                 f"Hodges-Lehmann shift {100 * test.shift:+.2f} percentage points, bootstrap 95 % CI "
                 f"[{100 * test.ci_low:.2f}, {100 * test.ci_high:.2f}], two-sided Mann-Whitney p = {test.p_value:.2g}. "
                 f"Paper (10 % against 0 %): p = {paper.PROBES.p_value:g}, 95 % CI [{paper.PROBES.ci_low:g}, "
                 f"{paper.PROBES.ci_high:g}].", f"![probe histograms]({histograms.name})"] + lines
        files.append(histograms)
    else:
        lines.insert(0, f"No probe histograms: ratios with probe accuracies are {sorted(stacks)}, "
                        f"--compare-ratios asked for {first:g} and {second:g}.")
    return lines, files


def write_summary_run(client: MlflowClient, experiment_id: str, folder: Path, runs: int) -> str:
    """Put the report's folder into the experiment's summary run, created once and re-written after."""
    found = client.search_runs([experiment_id], f"tags.`{SUMMARY_TAG}` = 'true'", max_results=1,
                               order_by=["attributes.start_time ASC"])
    run = found[0] if found else client.create_run(experiment_id, run_name=SUMMARY_RUN_NAME, tags={SUMMARY_TAG: "true"})
    run_id = run.info.run_id
    try:  # drop files of an earlier report that this one no longer writes
        get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts(SUMMARY_FOLDER)
    except (NotImplementedError, FileNotFoundError):
        pass  # a store that cannot delete keeps them; the files written now replace their namesakes
    client.log_artifacts(run_id, str(folder), artifact_path=SUMMARY_FOLDER)
    client.set_tag(run_id, "detox.summary.runs", str(runs))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def build_report(cfg: ReportConfig, log=print) -> Report:
    """Read the experiment, write the report's folder (and its summary run) and print it."""
    check(cfg)
    runs = load_runs(cfg.tracking_uri, cfg.experiment)
    if runs.empty:
        log(f"No finished study runs in experiment {cfg.experiment!r} at {cfg.tracking_uri}")
        return Report(runs=0)
    client = MlflowClient(cfg.tracking_uri)
    folder = cfg.folder()
    folder.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    report = Report(runs=len(runs))
    report.tables["Table 1"] = group_table(agg, TABLE1)
    ablation = ablation_tables(agg) if agg["variant"].nunique() > 1 else {}  # one variant: Table 1 again
    report.tables.update({f"Ablation: {title}": table for title, table in ablation.items()})
    matched = matched_cost_table(runs, cfg.ce_budget, cfg.min_well_formed)
    for title, table in ((f"ITI at matched cost (CE +{cfg.ce_budget:g} nats at most, clean and hostile; "
                          f"well-formed >= {cfg.min_well_formed:g} %): mean ± std [95 % CI] over seeds", matched),
                         (SEARCH_TITLE, search_table(runs)),
                         ("GCG attack success", gcg_table(agg)), ("Probes", probe_table(agg))):
        if not table.empty:
            report.tables[title] = table

    csv = folder / "table1.csv"  # numbers, not strings: mean, std, n of every metric and the paper's
    agg.assign(ratio=agg["ratio"].map(ratio_label)).to_csv(csv, index=False)
    report.files.append(csv)
    for title, table in list(report.tables.items())[1:]:
        path = folder / (re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".csv")
        table.to_csv(path, index=False)
        report.files.append(path)
    figures = []
    if toxicity_metrics(agg):
        for name, plot in (("toxicity_vs_ratio.png", plot_smile), ("ce_vs_toxicity.png", plot_tradeoff)):
            plot(agg, folder / name)
            figures.append(folder / name)
    search = report.tables.get(SEARCH_TITLE)
    if search is not None:
        plot_search(search, folder / "search_trials.png")
        figures.append(folder / "search_trials.png")
    probe_lines, probe_files = probe_section(client, runs, cfg, folder)
    report.files += figures + probe_files

    notes = (f"Columns marked \"paper\": {paper.SOURCE} (OLMo-1B on C4 + 4chan; a reference for the shape of the "
             "results). The paper does not say which RTP statistic its Table 1 reports: \"paper RTP\" sits beside "
             "both of ours.")
    heading = (f"Table 1 of experiment {cfg.experiment!r} at {cfg.tracking_uri}, {len(runs)} finished runs "
               f"(mean ± std over seeds):")
    terminal = [heading, grouped_view(report.tables["Table 1"]).to_string(index=False), notes]
    md = [f"# Report of experiment `{cfg.experiment}`", "", f"{len(runs)} finished study runs at `{cfg.tracking_uri}`; "
          "cells are mean ± std over seeds, (n=k) where fewer than the row's n runs logged the metric.", "", notes]
    for title, table in report.tables.items():
        md += ["", f"## {title}", "", markdown(grouped_view(table))]
        if title != "Table 1":
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


def print_table(tracking_uri: str, experiment: str, plot: str | None = None) -> pd.DataFrame:
    """Table 1 alone, printed (and the toxicity-against-ratio figure, when asked)."""
    runs = load_runs(tracking_uri, experiment)
    agg = aggregate(runs)
    if agg.empty:
        print(f"No finished study runs in experiment {experiment!r} at {tracking_uri}")
        return pd.DataFrame()
    table = group_table(agg, TABLE1)
    print(f"Experiment {experiment!r} at {tracking_uri} (mean ± std over seeds):")
    print(grouped_view(table).to_string(index=False))
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
                        metavar=("RATIO", "RATIO"), help="the two ratios of the probe histograms (default 0 10)")
    parser.add_argument("--no-summary-run", action="store_true", help="do not write the experiment's summary run")
    parser.add_argument("--ce-budget", type=float, default=ReportConfig.ce_budget,
                        help=f"ITI at matched cost: the most CE (nats) a steering may add (default {ReportConfig.ce_budget:g})")
    parser.add_argument("--min-well-formed", type=float, default=ReportConfig.min_well_formed,
                        help=f"ITI at matched cost: the fewest well-formed generations (%%) a steering may leave (default {ReportConfig.min_well_formed:g})")
    args = parser.parse_args(argv)
    cfg = ReportConfig(args.tracking_uri, args.experiment, args.out, tuple(args.compare_ratios), not args.no_summary_run,
                       ce_budget=args.ce_budget, min_well_formed=args.min_well_formed)
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
