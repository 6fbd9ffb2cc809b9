"""The trade-off curves in the report (`method=iti_curve` runs), and the power of the study's claims.

* The frontier: every curve read at a grid of CE budgets (`detox.core.tradeoff.frontier`: the lowest
  toxicity reachable within each), averaged over the seeds of one configuration, with a 95 % bootstrap
  band; one line per ratio (dotted: the random-direction control). Panels: each toxicity measure, and
  the share of the insult probability removed.
* The frontier table, per configuration and toxicity measure: unsteered, at matched cost (the report's
  --ce-budget, read off each curve by interpolation), the drop, the share removed at matched cost and
  at the curve's fixed strength (`iti.alpha`), the CE tax at that strength; each as the mean over
  seeds with a 95 % bootstrap percentile interval (inside the range of the seeds' values, so a
  percentage's interval stays inside [0, 100]), and whether a drop appears at all (a one-sample
  t-test, which with few seeds is more honest than the narrow bootstrap interval).
* The power table: for (a) the probes, (b) matched-cost and relative detoxification (from the
  curves) and (c) entanglement, every ratio against the baseline ratio (--compare-ratios' first):
  the difference of the means with its bootstrap interval, the two-sided pooled t-test, and the
  smallest difference the study could have detected with 80 % power at its seed counts and the
  observed between-seed SD (exact, from the noncentral t), so a claim that does not appear is stated
  with the size of effect that would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from detox.core import contract, tradeoff
from detox.core.contract import metric, param
from detox.core.progress import progress
from detox.core.stats import holm
from detox.report.figures import colours, figure
from detox.report.runs import artifact_downloads, ratio_label, study_runs

TOXICITIES = dict(zip(tradeoff.TOXICITIES, ("insult prob", "ToxiGen")))  # the curves' measures, as titled here
CONFIDENCE, POWER = 0.95, 0.80
FRONTIER_TITLE = "Trade-off curves"
POWER_TITLE = "Power of each claim"


# ---------------------------------------------------------------- statistics over seeds

@dataclass(frozen=True)
class Bootstrap:
    mean: float
    low: float  # 95 % percentile interval of the mean over resampled seeds
    high: float
    n: int


def bootstrap_mean(values, n_boot: int = 2000, seed: int = 0) -> Bootstrap:
    """The mean of the finite values with a percentile bootstrap interval (NaN bounds for fewer than 2
    values). Every resampled mean lies between the smallest and the largest value, so the interval
    does too: values inside [0, 100] give an interval inside [0, 100]."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return Bootstrap(float(values.mean()) if len(values) else math.nan, math.nan, math.nan, len(values))
    means = np.random.default_rng(seed).choice(values, (n_boot, len(values))).mean(axis=1)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Bootstrap(float(values.mean()), float(low), float(high), len(values))


def bootstrap_difference(first, second, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of mean(second) - mean(first), each group resampled on its own."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    rng = np.random.default_rng(seed)
    diffs = rng.choice(second, (n_boot, len(second))).mean(1) - rng.choice(first, (n_boot, len(first))).mean(1)
    low, high = np.quantile(diffs, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def detectable_difference(sd: float, n1: int, n2: int, power: float = POWER, level: float = 1 - CONFIDENCE) -> float:
    """The smallest true difference of means a two-sided pooled two-sample t-test at `level` detects
    with probability `power`, for groups of n1 and n2 with between-seed SD `sd` (exact: the noncentral
    t; n2 = 0 gives the one-sample test of n1 values against 0)."""
    from scipy import optimize, stats

    if n1 < 2 or (n2 and n2 < 1) or not sd > 0:
        return math.nan
    df = n1 + n2 - 2 if n2 else n1 - 1
    scale = sd * math.sqrt(1 / n1 + 1 / n2) if n2 else sd / math.sqrt(n1)
    critical = stats.t.ppf(1 - level / 2, df)

    def shortfall(delta: float) -> float:
        shift = delta / scale
        wrong_side = stats.nct.cdf(-critical, df, shift)  # vanishing for large shifts, where scipy may give NaN
        return stats.nct.sf(critical, df, shift) + (wrong_side if np.isfinite(wrong_side) else 0.0) - power

    high = scale * (critical + 1)
    while not shortfall(high) > 0:  # widen until the power passes the target (one degree of freedom needs far)
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high))


def pooled_sd(first, second) -> float:
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    df = len(first) + len(second) - 2
    if df < 1:
        return math.nan
    return float(math.sqrt(((len(first) - 1) * np.var(first, ddof=1 if len(first) > 1 else 0)
                            + (len(second) - 1) * np.var(second, ddof=1 if len(second) > 1 else 0)) / df))


def interval_text(found: Bootstrap, digits: int = 1) -> str:
    if found.n == 0:
        return "-"
    if found.n < 2:
        return f"{found.mean:.{digits}f} (n=1)"
    return f"{found.mean:.{digits}f} [{found.low:.{digits}f}, {found.high:.{digits}f}]"


# ---------------------------------------------------------------- the curves the runs logged

BASE_MODEL_STAGES = ("sources", "tokenizer", "mixture", "pretrain")  # the cfg params that make a base model


def configuration(runs: pd.DataFrame, stages: tuple[str, ...] | None = None) -> pd.Series:
    """Each run's configuration apart from its ratio and seed: the cfg params (of `stages`, else all)
    that vary among `runs`, as "name=value" words ("" where none varies). Seeds of one configuration are
    the unit of every test; two configurations are never pooled."""
    def wanted(column: str) -> bool:
        parts = column.removeprefix("params.cfg.").split(".")
        return (column.startswith("params.cfg.") and parts[-1] not in ("ratio", "seed")
                and (stages is None or parts[0] in stages))

    varying = [c for c in runs if wanted(c) and runs[c].fillna("<unset>").nunique() > 1]
    if not varying:
        return pd.Series("", index=runs.index)
    values = runs[varying].fillna("<unset>").astype(str)
    return values.apply(lambda row: " ".join(f"{k.removeprefix('params.cfg.')}={v}" for k, v in row.items()), axis=1)


def load_curves(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished iti_curve run with a curve: run_id, ratio, seed, setting, strength,
    direction, fixed_alpha and `curve` (a detox.core.tradeoff.Curve). Empty when there are none."""
    runs = study_runs(runs)
    if runs.empty or param(contract.METHOD) not in runs:
        return pd.DataFrame()
    runs = runs[runs[param(contract.METHOD)].eq(tradeoff.CURVE_METHOD)]
    # within each direction: the random control is told apart by its direction, not named a configuration
    direction = runs.get(param(contract.ITI_DIRECTION), pd.Series("", index=runs.index)).fillna("")
    configurations = pd.concat([pd.Series(dtype=str), *(configuration(group) for _, group in runs.groupby(direction))])
    rows = []
    with artifact_downloads() as tmp:
        for _, run in progress(list(runs.iterrows()), desc="curves", leave=False):
            run_id = run["run_id"]
            if tradeoff.CURVE_FILE not in {a.path for a in client.list_artifacts(run_id)}:
                continue
            path = client.download_artifacts(run_id, tradeoff.CURVE_FILE, dst_path=f"{tmp}/{run_id}")
            try:
                curve = tradeoff.read_curve(Path(path), list(TOXICITIES))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"run {run_id}: {tradeoff.CURVE_FILE} is not a curve: {error}") from None

            def given(name: str, default: str) -> str:  # a param the run may lack (NaN in the frame)
                value = run.get(param(name))
                return default if pd.isna(value) else value

            rows.append({"run_id": run_id, "ratio": float(run[param(contract.RATIO)]), "seed": run[param(contract.SEED)],
                         "setting": given(contract.SETTING, ""), "strength": run[param(contract.STRENGTH)],
                         "direction": given(contract.ITI_DIRECTION, "mass_mean"),
                         "fixed_alpha": float(given(contract.ITI_ALPHA, "0")),
                         "configuration": configurations[run.name], "curve": curve})
    if not rows:
        return pd.DataFrame()
    curves = pd.DataFrame(rows)
    # a line of the figure and a row of the table: one configuration (its setting), labelled by ratio and
    # strength, and by what differs (else the setting's hash) where a ratio and strength have several
    several = curves.groupby(["ratio", "strength"])["setting"].transform("nunique") > 1
    named = np.where(curves["configuration"].ne(""), curves["configuration"], curves["setting"].str[:8])
    curves["variant"] = curves["strength"] + np.where(several, " [" + named + "]", "")
    return curves.sort_values(["direction", "ratio", "variant", "seed"], kind="stable").reset_index(drop=True)


def primary_toxicity(seeds: pd.DataFrame) -> str:
    """The first toxicity measure (of TOXICITIES, in order) that the per-seed readings carry."""
    return next(m for m in TOXICITIES if f"curve_{m}_unsteered" in seeds)


def per_seed(curves: pd.DataFrame, ce_budget: float, min_well_formed: float) -> pd.DataFrame:
    """Each curve's measures at the report's budget (detox.core.tradeoff.summary), one row a curve."""
    measured = [tradeoff.summary(c, ce_budget, min_well_formed, a) for c, a in zip(curves["curve"], curves["fixed_alpha"])]
    return pd.concat([curves.drop(columns="curve").reset_index(drop=True), pd.DataFrame(measured)], axis=1)


def frontier_table(curves: pd.DataFrame, ce_budget: float, min_well_formed: float, n_boot: int = 2000) -> pd.DataFrame:
    """Per configuration (ratio, strength) and toxicity: the absolute and relative measures at the
    budget and at the fixed strength, mean [95 % bootstrap interval] over seeds, and whether a drop appears."""
    if curves.empty:
        return pd.DataFrame()
    seeds = per_seed(curves, ce_budget, min_well_formed)
    rows = []
    for (direction, ratio, variant), frame in seeds.groupby(["direction", "ratio", "variant"], sort=False):
        alpha = frame["fixed_alpha"].iloc[0]
        for m, title in TOXICITIES.items():
            if f"curve_{m}_unsteered" not in frame or frame[f"curve_{m}_unsteered"].isna().all():
                continue
            cell = {name: bootstrap_mean(frame[f"curve_{m}_{name}"], n_boot) for name in
                    ("unsteered", "at_budget", "drop_at_budget", "removed_at_budget", "removed_at_alpha")}
            drop = cell["drop_at_budget"]
            sd = frame[f"curve_{m}_drop_at_budget"].std(ddof=1) if len(frame) > 1 else math.nan
            smallest = detectable_difference(sd, len(frame), 0)
            if drop.n < 2:
                seen = "one seed: no test"
            elif drop_seen(frame[f"curve_{m}_drop_at_budget"]):
                seen = "yes"
            elif drop_test(frame[f"curve_{m}_drop_at_budget"]) < 1 - CONFIDENCE:
                seen = "no: toxicity rose"
            elif math.isfinite(smallest) and smallest <= cell["unsteered"].mean:
                seen = f"no (a drop of {smallest:.1f} would show with 80 % power)"
            else:  # the seeds' spread hides any drop the toxicity leaves room for
                seen = f"no (with {len(frame)} seeds not even a drop to 0 would show with 80 % power)"
            rows.append({"ratio": ratio_label(ratio), "variant": variant, "toxicity": title, "seeds": len(frame),
                         "unsteered %": interval_text(cell["unsteered"]),
                         "at matched cost %": interval_text(cell["at_budget"]),
                         "drop (points)": interval_text(drop),
                         "removed at matched cost %": interval_text(cell["removed_at_budget"]),
                         "removed at fixed alpha %": interval_text(cell["removed_at_alpha"]),
                         "fixed alpha": f"{alpha:g}",
                         "CE tax at fixed alpha": interval_text(bootstrap_mean(frame["curve_ce_tax_at_alpha"], n_boot), 3),
                         "alpha at budget": interval_text(bootstrap_mean(frame["curve_alpha_at_budget"], n_boot), 2),
                         "drop seen": seen})
    return pd.DataFrame(rows)


def drop_seen(drops) -> bool:
    """Whether the seeds' drops show one: positive on average and the t-test's p below 5 %."""
    drops = pd.Series(drops, dtype=float)
    return bool(drops.mean() > 0 and drop_test(drops) < 1 - CONFIDENCE)


def drop_test(drops: pd.Series) -> float:
    """The two-sided one-sample t-test's p-value of drops against none (0 for drops that are all
    equal and positive, 1 for none at all). With few seeds the bootstrap interval is too narrow to
    judge by (two seeds: about their range), so whether a drop appears is the t-test's call."""
    from scipy import stats

    drops = drops.dropna().to_numpy(float)
    if np.ptp(drops) == 0:
        return 0.0 if drops[0] > 0 else 1.0
    return float(stats.ttest_1samp(drops, 0.0).pvalue)


# ---------------------------------------------------------------- power of every claim

def per_model_metric(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """One value of a per-base-model metric (a probe's, logged by every ITI run of the model) per
    (ratio, seed, base model): ratio, value."""
    column = metric(name)
    if column not in runs:
        return pd.DataFrame(columns=["ratio", "value", "configuration"])
    found = runs[runs[column].notna()]
    keys = [param(contract.RATIO), param(contract.SEED)] + ([param(contract.BASE_MODEL)] if param(contract.BASE_MODEL) in found else [])
    found = found.drop_duplicates(keys)
    return pd.DataFrame({"ratio": found[param(contract.RATIO)].astype(float), "value": found[column],
                         "configuration": configuration(found, BASE_MODEL_STAGES)})


def power_table(runs: pd.DataFrame, curves: pd.DataFrame, baseline: float, ce_budget: float, min_well_formed: float,
                n_boot: int = 2000) -> pd.DataFrame:
    """Every claim's comparison of each ratio with `baseline`: (a) probes, (b) detoxification from the
    mass-mean curves (and their random control, apart), (c) entanglement."""
    claims: list[tuple[str, str, pd.DataFrame]] = []
    runs = study_runs(runs)
    for claim, name, title in (("(a) probes", contract.PROBE_BEST_ACCURACY, "best probe accuracy"),
                               ("(a) probes", contract.PROBE_MEAN_ACCURACY, "mean probe accuracy"),
                               ("(c) entanglement", contract.ENTANGLEMENT_BEST_HEAD, "entanglement, best head"),
                               ("(c) entanglement", contract.ENTANGLEMENT_MEAN, "entanglement, mean head")):
        if not runs.empty:
            values = per_model_metric(runs, name)
            if claim == "(a) probes":  # room above the clean model: the labels' ceiling minus its accuracy
                ceiling = per_model_metric(runs, contract.PROBE_LABEL_CEILING)["value"].mean()
                values = values.assign(room=ceiling - values.loc[values["ratio"].eq(baseline), "value"].mean())
            claims.append((claim, title, values))
    if not curves.empty:
        seeds = per_seed(curves, ce_budget, min_well_formed)
        primary = primary_toxicity(seeds)
        for (direction, _), frame in seeds.groupby(["direction", "configuration"], sort=False):
            claim = "(b) detoxification" if direction != "random" else "(b) random control"
            for name, title in (("drop_at_budget", "drop at matched cost (points)"),
                                ("removed_at_budget", "removed at matched cost (%)"),
                                ("removed_at_alpha", "removed at fixed alpha (%)")):
                claims.append((claim, f"{TOXICITIES[primary]} {title}",
                               frame.assign(value=frame[f"curve_{primary}_{name}"])[["ratio", "value", "configuration"]]))
            claims.append((claim, "CE tax at fixed alpha (nats)",
                           frame.assign(value=frame["curve_ce_tax_at_alpha"])[["ratio", "value", "configuration"]]))
    rows = []
    for claim, title, values in claims:
        for config, found in values.dropna(subset=["value"]).groupby("configuration", sort=False):
            base = found.loc[found["ratio"].eq(baseline), "value"].to_numpy(float)
            for ratio in sorted(set(found["ratio"]) - {baseline}):
                other = found.loc[found["ratio"].eq(ratio), "value"].to_numpy(float)
                room = float(found["room"].iloc[0]) if "room" in found else math.inf
                rows.append({"claim": claim, "measure": title, "configuration": config, "toxic share %": ratio_label(ratio),
                             **comparison(base, other, n_boot, digits=3 if "nats" in title or "accuracy" in title
                                          or "entanglement" in title else 1, room=room)})
    table = pd.DataFrame(rows)  # claims in order (a), (b), (c); "toxic share %", not "ratio": no blanking
    if table.empty:
        return table
    adjusted = holm_adjusted(table)
    table.insert(table.columns.get_loc("p") + 1, "p (Holm)", [f"{a:.2g}" if math.isfinite(a) else "-" for a in adjusted])
    passes_alone = table["raw p"] < 1 - CONFIDENCE
    table.loc[passes_alone & ~(adjusted < 1 - CONFIDENCE), "verdict"] = "not after Holm's correction over the claim's tests"
    table = table.drop(columns="raw p")
    if (table["configuration"] == "").all():
        table = table.drop(columns="configuration")
    return table.sort_values("claim", kind="stable").reset_index(drop=True)


def holm_adjusted(table: pd.DataFrame) -> pd.Series:
    """The p-values adjusted by Holm's step-down over each claim's whole family of tests (every measure,
    configuration and ratio of the claim; NaN where no test ran)."""
    adjusted = pd.Series(np.nan, index=table.index)
    for _, family in table.groupby("claim"):
        p = family["raw p"].dropna()
        adjusted[p.index] = holm(p.to_numpy())
    return adjusted


def comparison(base: np.ndarray, other: np.ndarray, n_boot: int, digits: int, room: float = math.inf) -> dict[str, str]:
    """One row of the power table: the two groups' sizes, the difference with its interval and p-value,
    the pooled SD, the smallest detectable difference, and the verdict in words; a power statement only
    for a difference that `room` (how far the measure can rise above the baseline) allows."""
    from scipy import stats

    row = {"n": f"{len(other)} vs {len(base)}", "raw p": math.nan}
    if len(base) < 2 or len(other) < 2:
        return {**row, "difference [95 % bootstrap]": "-", "p": "-", "between-seed SD": "-", "detectable at 80 % power": "-",
                "verdict": "too few seeds (2 a ratio at least)"}
    difference = other.mean() - base.mean()
    low, high = bootstrap_difference(base, other, n_boot)
    sd = pooled_sd(base, other)
    smallest = detectable_difference(sd, len(other), len(base))
    p = stats.ttest_ind(other, base).pvalue if sd > 0 else math.nan
    if p < 1 - CONFIDENCE:
        verdict = "differs"
    elif math.isfinite(smallest) and smallest > room:
        verdict = f"no difference seen; none would show: {smallest:.{digits}f} needed, {room:.{digits}f} of room"
    else:
        verdict = f"no difference seen; one of {smallest:.{digits}f} or more would show with 80 % power" \
            if math.isfinite(smallest) else "no difference seen"
    return {**row, "difference [95 % bootstrap]": f"{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]",
            "p": f"{p:.2g}" if math.isfinite(p) else "-", "raw p": p, "between-seed SD": f"{sd:.{digits}f}",
            "detectable at 80 % power": f"{smallest:.{digits}f}" if math.isfinite(smallest) else "-", "verdict": verdict}


# ---------------------------------------------------------------- the figure

def plot_frontier(curves: pd.DataFrame, path: Path, ce_budget: float, min_well_formed: float, max_cost: float,
                  n_boot: int = 1000) -> None:
    """Toxicity against CE cost, one line per configuration (mean over seeds of each curve's frontier,
    a 95 % bootstrap band), the random control dotted; the budget as a vertical line."""
    costs = np.linspace(0.0, max_cost, 41)
    present = [m for m in TOXICITIES if all(m in c.toxicity for c in curves["curve"])]
    panels = [(m, False) for m in present] + [(present[0], True)]  # the last panel: the share removed
    ratios = sorted(curves["ratio"].unique())
    colour = colours([ratio_label(r) for r in ratios])
    title = "trade-off curves: toxicity against the CE cost of ITI (mean over seeds, 95 % bootstrap band)"
    with figure(path, len(panels), title) as axes:
        for ax, (m, relative) in zip(axes, panels):
            for (direction, ratio, variant), frame in curves.groupby(["direction", "ratio", "variant"], sort=False):
                lines = np.array([tradeoff.frontier(c, m, costs, min_well_formed) for c in frame["curve"]])
                if relative:  # against each model's unsteered toxicity
                    before = np.array([[c.toxicity[m][0]] for c in frame["curve"]])
                    lines = np.where(before > 0, 100 * (before - lines) / np.where(before > 0, before, 1), np.nan)
                bands = [bootstrap_mean(lines[:, k], n_boot) for k in range(len(costs))]
                mean = np.array([b.mean for b in bands])
                style = ":" if direction == "random" else "-"
                ax.plot(costs, mean, style, color=colour[ratio_label(ratio)],
                        label=f"{ratio_label(ratio)} % {variant} (n={len(frame)})")
                if len(frame) > 1:
                    ax.fill_between(costs, [b.low for b in bands], [b.high for b in bands], color=colour[ratio_label(ratio)],
                                    alpha=0.15, linewidth=0)
            ax.axvline(ce_budget, color="0.4", linestyle="--", linewidth=1, label=f"budget {ce_budget:g} nats")
            ylabel = f"{TOXICITIES[m]} removed (% of unsteered)" if relative else f"lowest {TOXICITIES[m]} % within the cost"
            ax.set(xlabel="CE cost (nats; the larger of clean, hostile)", ylabel=ylabel)
            ax.grid(alpha=0.3)


def frontier_section(curves: pd.DataFrame, runs: pd.DataFrame, folder: Path, ce_budget: float, min_well_formed: float,
                     max_cost: float, baseline: float) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """The frontier table and figure (where runs logged `curves`, load_curves') and the power table, by title;
    the figure's path."""
    tables, files = {}, []
    if not curves.empty:
        tables[f"{FRONTIER_TITLE} read at CE +{ce_budget:g} nats and well-formed >= {min_well_formed:g} % "
               "(mean [95 % bootstrap interval] over seeds)"] = frontier_table(curves, ce_budget, min_well_formed)
        plot_frontier(curves, folder / "frontier.png", ce_budget, min_well_formed, max_cost)
        files.append(folder / "frontier.png")
    power = power_table(runs, curves, baseline, ce_budget, min_well_formed)
    if not power.empty:
        tables[f"{POWER_TITLE} (each ratio minus {ratio_label(baseline)}; t-test at 5 %)"] = power
    return tables, files
