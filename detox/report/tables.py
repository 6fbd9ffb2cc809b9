"""The report's tables: the metric columns, Table 1 in the paper's layout, the ablation pivots, ITI at
matched cost, the best-ratio search's trials, GCG and the probes; and their text forms (markdown, the
paper's grouping)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from detox.core import contract, paper
from detox.core.contract import metric, param
from detox.core.stats import t_interval
from detox.report.capability_table import TITLE as CAPABILITY_TITLE, capability_table
from detox.report.runs import PAPER_FIELDS, aggregate, natural_key, order_key, ratio_label, study_runs
from detox.core.tradeoff import Curve
from detox.core.tradeoff import at_budget as tradeoff_at_budget

SEARCH_TITLE = "Best-ratio search: trials, best first"


@dataclass(frozen=True)
class Column:
    """A metric column of a table."""

    metric: str  # the MLflow metric key (a name of detox.core.contract)
    title: str  # the column title
    always: bool = False  # shown even when no run logged the metric
    paper: str | None = None  # the `paper.PaperRow` field shown right after this column


# The paper's tables do not name their unit: its ToxiGen and RTP numbers stand beside our shares scored toxic
# (>= the scorer's threshold), the unit their titles say they are read in; the other reading, mean score
# x 100, is measured too (the "mean x100" columns), so a reader can set them side by side. The paper's
# toxicity was scored by the Perspective API, which its titles say: ours by the scorer each table names.
PAPER_TITLES = dict(zip(PAPER_FIELDS, ("paper ToxiGen (Perspective, as % toxic)", "paper RTP (Perspective, as % toxic)",
                                       "paper CE loss")))
TABLE1_TITLE = "Table 1"


def scorer_note(scorers: Sequence[str]) -> str:
    """Which scorer gave our figures and which gave the paper's, and what may be compared."""
    calibrated = all(" calibrated:" in s or s.startswith("perspective") for s in scorers)
    return (f"Our toxicity was scored by {'; '.join(scorers)} (each table names its scorer where there are several); "
            "the paper's by Google's Perspective API, its unversioned model of the time. "
            + ("" if calibrated else "A classifier's scores are on its own scale: set the shape of ours (the smile, the "
               "drops, the order of the methods) beside the paper's, not the level, unless the scorer is Perspective or "
               "calibrated onto its scale (scorer.calibration; docs/guide/measuring-toxicity.md)."))
PAPER_UNITS = ("The paper's ToxiGen and RTP numbers are read as percentages of continuations scored toxic (at or "
               "above the scorer's threshold) and stand beside ours in that unit; secondary sources also read them as "
               "the mean score x 100, which the \"mean x100\" columns measure.")
TABLE1 = (
    Column(contract.TOXIGEN, "ToxiGen %", always=True, paper="toxigen"),
    Column(contract.TOXIGEN_MEAN_SCORE, "ToxiGen mean x100"),
    Column(contract.RTP_EXPECTED_MAX_TOXICITY, "RTP exp.max %", always=True),
    Column(contract.RTP_TOXICITY_PROBABILITY, "RTP prob %", always=True, paper="rtp"),  # "paper RTP" beside both RTP columns
    Column(contract.RTP_MEAN_SCORE, "RTP mean x100"),
    Column(contract.CE_LOSS, "CE loss", always=True, paper="ce_loss"),
    Column(contract.INSULT_PROBABILITY, "insult prob %"),
    Column(contract.WELL_FORMED, "well-formed %"),
    Column(contract.CE_HOSTILE, "hostile CE"),
    Column(contract.RTP_SAMPLE_TOXICITY, "RTP sample %"),
    Column(contract.IMPLIED_TOXIGEN, "implied ToxiGen %"),
    Column(contract.IMPLIED_INSULT_PROBABILITY, "implied insult %"),
    Column(contract.REALISED_INSULT_PROBABILITY, "realised insult %"),
)
ABLATION = TABLE1[:9]  # the pivots: the paper's metrics and the new behavioural ones, not the calibration targets
GCG = (Column(contract.GCG_SUCCESS, "GCG success %"), Column(contract.GCG_SUCCESS_ITI, "GCG success with ITI %"))
PROBES = (Column(contract.PROBE_BEST_ACCURACY, "best probe accuracy"),
          Column(contract.PROBE_MEAN_ACCURACY, "mean probe accuracy"),
          Column(contract.PROBE_LABEL_CEILING, "label ceiling"),
          Column(contract.ENTANGLEMENT_BEST_HEAD, "entanglement (best head)"),
          Column(contract.ENTANGLEMENT_MEAN, "entanglement (mean head)"),
          Column(contract.ENTANGLEMENT_RANDOM_LEVEL, "random level"))


def by_scorer(agg: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The aggregated rows of each scorer (the `scorer` column), each its own table: figures of two scorers
    never share a column. Within one scorer's rows the variant needs no scorer of its own."""
    return {scorer: part.assign(variant=part["variant"].str.replace(f" [scorer {scorer}]", "", regex=False))
            .reset_index(drop=True) for scorer, part in agg.groupby("scorer", sort=False)}


def scorer_suffix(scorer: str, parts: dict) -> str:
    """A table title's mark of its scorer, where the report holds several."""
    return f" (scorer: {scorer})" if len(parts) > 1 else ""


def table1s(agg: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Table 1, one a scorer: "Table 1", or "Table 1 (scorer: ...)" each where the runs have several."""
    parts = by_scorer(agg)
    return {TABLE1_TITLE + scorer_suffix(scorer, parts): group_table(part, TABLE1) for scorer, part in parts.items()}


def report_tables(runs: pd.DataFrame, agg: pd.DataFrame, ce_budget: float, min_well_formed: float) -> dict[str, pd.DataFrame]:
    """Every table of the report, by title, Table 1 first (one a scorer); tables without rows are left out."""
    tables = table1s(agg)
    parts = by_scorer(agg)
    for scorer, part in parts.items():
        ablation = ablation_tables(part) if part["variant"].nunique() > 1 else {}  # one variant: Table 1 again
        tables.update({f"Ablation: {title}{scorer_suffix(scorer, parts)}": table for title, table in ablation.items()})
    matched = matched_cost_table(runs, ce_budget, min_well_formed)
    for title, table in ((f"ITI at matched cost (CE +{ce_budget:g} nats at most, clean and hostile; "
                          f"well-formed >= {min_well_formed:g} %): mean ± std [95 % CI] over seeds", matched),
                         (SEARCH_TITLE, search_table(runs)), (CAPABILITY_TITLE, capability_table(runs)),
                         *((f"GCG attack success{scorer_suffix(scorer, parts)}", gcg_table(part))
                           for scorer, part in parts.items()),
                         *((f"Probes{scorer_suffix(scorer, parts)}", probe_table(part)) for scorer, part in parts.items())):
        if not table.empty:
            tables[title] = table
    return tables


# ---------------------------------------------------------------- ITI against its own base model

GRID_MEASURES = (contract.INSULT_PROBABILITY, contract.CE_LOSS, contract.CE_HOSTILE, contract.WELL_FORMED)  # a curve's


def matched_cost_table(runs: pd.DataFrame, ce_budget: float, min_well_formed: float) -> pd.DataFrame:
    """ITI at matched cost, per ratio: every base model's (ratio, seed) ITI runs at a grid of strengths
    read as a curve at the budget (`ce_budget` nats of CE loss on clean and on hostile-context text,
    `min_well_formed` % well-formed generations), as the curves of method=iti_curve are: the insult
    probability where the budget is crossed, so noise cannot only lower it and "no effect" shows as a
    drop near 0 of either sign; for the probe directions and, apart, the random control
    (`iti_direction=random`); mean, std and a 95 % t-interval over seeds.

    A steering is compared with the method=none run of its own base model (the `base_model` param), so
    an experiment may hold several worlds or model sizes; runs logged without that param (before it
    was part of the contract) are left out."""
    runs = study_runs(runs)
    needed = [metric(m) for m in GRID_MEASURES]
    base_model, method = param(contract.BASE_MODEL), param(contract.METHOD)
    if runs.empty or base_model not in runs or any(c not in runs for c in needed) or "iti" not in set(runs[method]):
        return pd.DataFrame()
    runs = runs[runs[base_model].notna()]
    base = runs[runs[method] == "none"].drop_duplicates(base_model).set_index(base_model)
    # what tells base models apart beyond their ratio and seed: their cfg params (shown when they vary)
    described = [c for c in base if c.startswith("params.cfg.") and not c.endswith((".seed", ".ratio"))]
    base = base[needed + described].rename(columns=lambda c: f"{c} base")
    steered = runs[runs[method] == "iti"].join(base, on=base_model).dropna(subset=[f"{c} base" for c in needed])
    if steered.empty:
        return pd.DataFrame()
    worlds = [c for c in described if steered[f"{c} base"].fillna("<unset>").nunique() > 1]
    steered["base setting"] = steered[[f"{c} base" for c in worlds]].fillna("<unset>").apply(
        lambda row: " ".join(f"{k.removeprefix('params.cfg.').removesuffix(' base')}={v}" for k, v in row.items()),
        axis=1) if worlds else ""
    direction = steered.get(param(contract.ITI_DIRECTION), pd.Series(None, index=steered.index, dtype=object))
    steered = steered.assign(control=direction.eq("random"), alpha=steered[param(contract.ITI_ALPHA)].astype(float))
    seed = param(contract.SEED)

    def at_budget(frame: pd.DataFrame) -> pd.Series:
        """One base model's grid of strengths as a curve (the base model its alpha 0), read at the budget
        as every curve is (detox.core.tradeoff.at_budget: at the crossing, not the grid's lowest point)."""
        first = frame.iloc[0]
        points = [{"alpha": 0.0, **{k: first[f"{c} base"] for k, c in zip(GRID_MEASURES, needed)}}]
        points += [{"alpha": row["alpha"], **{k: row[c] for k, c in zip(GRID_MEASURES, needed)}}
                   for _, row in frame.sort_values("alpha").drop_duplicates("alpha").iterrows()]
        curve = Curve.from_points(points, GRID_MEASURES[:1])
        found = tradeoff_at_budget(curve, ce_budget, min_well_formed).toxicity[GRID_MEASURES[0]]
        return pd.Series({"best": found, "base": first[f"{needed[0]} base"]})

    rows = []
    for (setting, ratio), frame in steered.groupby(["base setting", steered[param(contract.RATIO)].astype(float)]):
        per_model = frame.groupby([seed, "control"]).apply(at_budget, include_groups=False).reset_index()
        probe, random = per_model[~per_model["control"]], per_model[per_model["control"]]
        rows.append({**({"base setting": setting} if worlds else {}), "ratio": ratio_label(ratio),
                     "seeds": probe[seed].nunique(),
                     "insult % without ITI": interval_cell(probe["base"]),
                     "with ITI at matched cost": interval_cell(probe["best"]),
                     "drop": interval_cell(probe["base"] - probe["best"]),
                     "random control at matched cost": interval_cell(random["best"]) if len(random) else "-",
                     "drop (random)": interval_cell(random["base"] - random["best"]) if len(random) else "-"})
    return pd.DataFrame(rows)


def interval_cell(values: pd.Series) -> str:
    """"mean ± std [low, high]" (95 % t-interval); the mean and n for one value; "-" for none."""
    found = t_interval(values)
    if found.n < 2:
        return f"{found.mean:.1f} (n={found.n})" if found.n else "-"
    return f"{found.mean:.1f} ± {found.std:.1f} [{found.low:.1f}, {found.high:.1f}]"


def search_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The best-ratio search's trials (runs that logged `search_objective`), best first. The ratio column
    is "toxic share %" so that the grouped view (which blanks a repeated ratio) leaves it whole."""
    if metric(contract.SEARCH_OBJECTIVE) not in runs:
        return pd.DataFrame()
    trials = runs[runs[metric(contract.SEARCH_OBJECTIVE)].notna()]
    if trials.empty:
        return pd.DataFrame()
    m = {name: trials[metric(name)] for name in contract.SEARCH_METRICS}
    alpha = pd.to_numeric(trials.get(param(contract.ITI_ALPHA), pd.Series(np.nan, index=trials.index))).round(2)
    table = pd.DataFrame({
        "toxic share %": trials[param(contract.RATIO)].astype(float).map(ratio_label),
        "seed": trials[param(contract.SEED)], "method": trials[param(contract.METHOD)],
        "alpha": alpha.astype(object).where(alpha.notna(), "-"),
        "toxicity % after": (m[contract.SEARCH_UNSTEERED] - m[contract.SEARCH_DROP]).round(1),
        "unsteered %": m[contract.SEARCH_UNSTEERED].round(1),
        "CE cost (nats)": m[contract.SEARCH_CE_COST].round(3),
        "within budget": m[contract.SEARCH_FEASIBLE].map({1.0: "yes", 0.0: "no"}),
        "objective": m[contract.SEARCH_OBJECTIVE].round(2)})
    return table.sort_values("objective", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- tables of the aggregated runs

def cell(mean: float, std: float, n: int, expected: int | None = None) -> str:
    """"mean ± std"; the mean alone for one value; "(n=k)" when fewer values than `expected`."""
    if n == 0:
        return "-"
    text = f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"
    return text if expected is not None and n == expected else f"{text} (n={n})"


def present(agg: pd.DataFrame, columns: Sequence[Column]) -> list[Column]:
    return [c for c in columns if c.always or (f"{c.metric} n" in agg and agg[f"{c.metric} n"].gt(0).any())]


def group_table(agg: pd.DataFrame, columns: Sequence[Column], paper_numbers: bool = True) -> pd.DataFrame:
    """Table 1's layout for readers: per row the group, n and one "mean ± std" cell a metric (with
    the paper's numbers beside, when asked); metrics no run logged are left out unless `always`."""
    if agg.empty:
        return pd.DataFrame()
    keys = list(agg.columns[:agg.columns.get_loc("variant")])  # ratio, method, strength, scorer, configuration
    if "scorer" in keys and agg["scorer"].nunique() == 1:  # one scorer: the title or heading names it
        keys.remove("scorer")
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


# ---------------------------------------------------------------- text forms

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
