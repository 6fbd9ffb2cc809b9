"""The paper's recipe beside its rivals (experiment=rivals): every method at matched cost, the fine-tuning
attack and the training dynamics.

* The rivals table: per ratio and method, over seeds (mean and Student-t interval, clipped to the
  measure's range): the toxicity at matched cost, the points and the share of the untreated toxicity
  removed (the method=none run of the same ratio and seed is the untreated model), and the CE tax. A
  steering with a trade-off curve (iti_curve, caa) is read at the budget its job logged
  (curve_*_at_budget, curve_cost_at_budget); a method without a strength (filter, loss_mask, ablate,
  meda, ...) is its own one point: its CE tax is its CE loss minus the untreated model's, shown, not
  matched. Each method is tested against the paper's recipe (RECIPE: keep the toxic data, then ITI
  read at matched cost) at the same ratio, paired by seed (Student's paired t test), the p-values
  Holm-corrected over the methods of that ratio; beside each, the smallest difference that test would
  detect with 80 % power given the pairs' spread, at Holm's strictest level (0.05 over the tests of
  the ratio), so a "level" reads as "within that many points".
* The attack figure: toxicity against fine-tuning attack steps (the `tamper` group), per method and
  ratio, and the steps until half of the toxicity a method removed is back (detox.core.tamper).
* The dynamics table and figure: probe accuracy and the drop at matched cost against the tokens seen,
  read from the dynamics.json of iti_curve runs whose pre-training kept snapshots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from detox.core import contract, tamper
from detox.core.progress import progress
from detox.core.stats import holm, t_interval
from detox.core.tradeoff import CURVE_METHOD
from detox.core.contract import metric, param
from detox.report.figures import colours, figure
from detox.report.frontier import CONFIDENCE, detectable_difference
from detox.report.runs import artifact_downloads, ratio_label, study_runs

RECIPE = CURVE_METHOD  # the paper's recipe: keep the toxic data, steer with ITI (read at matched cost)
CURVED = (CURVE_METHOD, "caa")  # methods whose jobs log a trade-off curve's reading at their budget
UNTREATED = "none"
RIVALS_TITLE = "Rivals at matched cost"
ATTACK_TITLE = "Fine-tuning attack"
DYNAMICS_TITLE = "Training dynamics"
DYNAMICS_FILE = "dynamics.json"  # written by detox.methods.iti_curve's dynamics stage


def per_seed(runs: pd.DataFrame, measure: str) -> pd.DataFrame:
    """One row per run: ratio, seed, method, strength, the toxicity at matched cost, the untreated
    toxicity (method=none of the same ratio and seed) and the CE tax."""
    runs = study_runs(runs)
    if runs.empty or metric(measure) not in runs:
        return pd.DataFrame()
    direction = runs[param(contract.ITI_DIRECTION)] if param(contract.ITI_DIRECTION) in runs else ""
    frame = pd.DataFrame({"ratio": runs[param(contract.RATIO)].astype(float), "seed": runs[param(contract.SEED)],
                          "method": runs[param(contract.METHOD)], "strength": runs[param(contract.STRENGTH)],
                          "direction": direction, "toxicity": runs[metric(measure)], "ce": runs[metric("ce_loss")]})
    curved = frame["method"].isin(CURVED)
    if metric(f"curve_{measure}_at_budget") in runs:
        frame.loc[curved, "toxicity"] = runs.loc[curved, metric(f"curve_{measure}_at_budget")]
    untreated = frame[frame["method"].eq(UNTREATED)].drop_duplicates(["ratio", "seed"]).set_index(["ratio", "seed"])
    keys = pd.MultiIndex.from_frame(frame[["ratio", "seed"]])
    frame["untreated"] = untreated["toxicity"].reindex(keys).to_numpy()
    frame["ce_tax"] = frame["ce"] - untreated["ce"].reindex(keys).to_numpy()
    if metric("curve_cost_at_budget") in runs:
        frame.loc[curved, "ce_tax"] = runs.loc[curved, metric("curve_cost_at_budget")]
    frame["removed"] = frame["untreated"] - frame["toxicity"]
    frame["share"] = 100 * frame["removed"] / frame["untreated"].where(frame["untreated"] > 0)
    return frame


def _cell(values: pd.Series, digits: int, low: float = -math.inf, high: float = math.inf) -> str:
    """Mean [t interval], the interval clipped to what the measure can be: with a few seeds a
    probability's interval would otherwise reach below 0 or above 100."""
    def text(x: float) -> str:
        return f"{x if round(x, digits) else 0.0:.{digits}f}"  # never "-0.0"

    found = t_interval(values)
    if math.isnan(found.mean):
        return "-"
    if math.isnan(found.low):
        return text(found.mean)
    return f"{text(found.mean)} [{text(max(found.low, low))}, {text(min(found.high, high))}]"


def rivals_table(runs: pd.DataFrame, measure: str = "insult_probability") -> pd.DataFrame:
    """The rivals table (module docstring); empty without method=none runs."""
    seeds = per_seed(runs, measure)
    if seeds.empty or not seeds["method"].eq(UNTREATED).any():
        return pd.DataFrame()
    from scipy import stats

    rows = []
    for ratio, at_ratio in seeds.groupby("ratio"):
        # the recipe is ITI along the concept's direction at its first strength, never the random control
        steered = at_ratio[at_ratio["method"].eq(RECIPE) & at_ratio["direction"].ne("random")]
        first = steered["strength"].iloc[0] if len(steered) else None
        recipe = steered[steered["strength"].eq(first)].set_index("seed")["toxicity"]
        block = []
        for (method, strength), group in at_ratio.groupby(["method", "strength"], sort=False):
            is_recipe = method == RECIPE and strength == first
            paired = group.set_index("seed")["toxicity"].to_frame("method").join(recipe.rename("recipe"), how="inner")
            difference = (paired["method"] - paired["recipe"]).dropna()
            p, sd = np.nan, np.nan
            if not is_recipe and len(difference) >= 2 and difference.std() > 0:
                p, sd = float(stats.ttest_1samp(difference, 0.0).pvalue), float(difference.std(ddof=1))
            block.append({"toxic share %": ratio_label(ratio), "method": method, "strength": strength,
                          "seeds": len(group), f"{measure} % at matched cost": _cell(group["toxicity"], 1, 0, 100),
                          "removed (points)": _cell(group["removed"], 1),
                          "removed (% of untreated)": _cell(group["share"], 0, high=100),
                          "CE tax (nats)": _cell(group["ce_tax"], 3),
                          "vs recipe (mean diff)": f"{difference.mean():+.1f}" if not is_recipe and len(difference) else "-",
                          "p": p, "sd": sd, "n": len(difference)})
        adjusted = holm([row["p"] for row in block])
        level = (1 - CONFIDENCE) / max(1, int(np.isfinite(adjusted).sum()))  # Holm's strictest step
        for row, value in zip(block, adjusted):
            row["p (Holm)"] = "-" if math.isnan(value) else f"{value:.3f}"
            smallest = detectable_difference(row.pop("sd"), row.pop("n"), 0, level=level)
            row["detectable (80 % power)"] = f"{smallest:.1f}" if math.isfinite(smallest) else "-"
            del row["p"]
        rows += block
    return pd.DataFrame(rows)


def attack_curves(runs: pd.DataFrame, measure: str = "insult_probability") -> pd.DataFrame:
    """One row per (run, attack step): ratio, seed, method, step, the toxicity then, and the untreated
    toxicity of the ratio and seed (method=none's at step 0, i.e. its evaluation)."""
    runs = study_runs(runs)
    head = f"metrics.{tamper.PREFIX}{measure}_step_"
    if runs.empty or not any(c.startswith(head) for c in runs):
        return pd.DataFrame()
    rows = []
    for _, run in runs.iterrows():
        values = {c.removeprefix("metrics."): v for c, v in run.items() if c.startswith(head) and pd.notna(v)}
        steps, toxicity = tamper.points_from_metrics(values, measure)
        rows += [{"ratio": float(run[param(contract.RATIO)]), "seed": run[param(contract.SEED)],
                  "method": run[param(contract.METHOD)], "step": s, "toxicity": t} for s, t in zip(steps, toxicity)]
    frame = pd.DataFrame(rows)
    start = frame[frame["method"].eq(UNTREATED) & frame["step"].eq(0)].drop_duplicates(["ratio", "seed"])
    return frame.merge(start[["ratio", "seed", "toxicity"]].rename(columns={"toxicity": "untreated"}),
                       on=["ratio", "seed"], how="left")


def attack_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per ratio and method: toxicity before and after the attack, and the steps until half of the
    removed toxicity is back (mean over seeds; 'never' when no seed got there within the attack)."""
    rows = []
    for (ratio, method), group in curves.groupby(["ratio", "method"]):
        half = [tamper.steps_to_half_back(seed["step"].to_numpy(), seed["toxicity"].to_numpy(), seed["untreated"].iloc[0])
                for _, seed in group.sort_values("step").groupby("seed")]
        finite = [h for h in half if np.isfinite(h)]
        last = group["step"].max()
        rows.append({"toxic share %": ratio_label(ratio), "method": method, "seeds": group["seed"].nunique(),
                     "before attack %": f"{group[group['step'].eq(0)]['toxicity'].mean():.1f}",
                     f"after {last:g} steps %": f"{group[group['step'].eq(last)]['toxicity'].mean():.1f}",
                     "steps to half back": ("-" if all(math.isnan(h) for h in half) else
                                            f"{np.mean(finite):.0f}" if finite else f"never (> {last:g})")})
    return pd.DataFrame(rows)


def plot_attack(curves: pd.DataFrame, path: Path, measure: str) -> None:
    ratios = sorted(curves["ratio"].unique())
    colour = colours(sorted(curves["method"].unique()))
    with figure(path, panels=len(ratios), title="Fine-tuning attack") as axes:
        for ax, ratio in zip(axes, ratios):
            at = curves[curves["ratio"].eq(ratio)]
            for method, group in at.groupby("method"):
                mean = group.groupby("step")["toxicity"].mean()
                ax.plot(mean.index, mean.to_numpy(), marker="o", label=method, color=colour[method])
            ax.set(title=f"toxic share {ratio_label(ratio)} %", xlabel="attack steps", ylabel=f"{measure} %")


def load_dynamics(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, model) of the iti_curve runs that logged dynamics.json: ratio, seed and its fields."""
    runs = study_runs(runs)
    if runs.empty:
        return pd.DataFrame()
    runs = runs[runs[param(contract.METHOD)].eq(CURVE_METHOD)]
    rows = []
    with artifact_downloads() as tmp:
        for _, run in progress(list(runs.iterrows()), desc="dynamics", leave=False):
            if DYNAMICS_FILE not in {a.path for a in client.list_artifacts(run["run_id"])}:
                continue
            path = client.download_artifacts(run["run_id"], DYNAMICS_FILE, dst_path=f"{tmp}/{run['run_id']}")
            rows += [{"ratio": float(run[param(contract.RATIO)]), "seed": run[param(contract.SEED)], **row}
                     for row in json.loads(Path(path).read_text())]
    return pd.DataFrame(rows)


def dynamics_table(dynamics: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per ratio and snapshot (tokens seen): the seeds, the best probe's accuracy and the drop at matched
    cost, each mean [95 % t interval] over seeds."""
    drop = f"curve_{measure}_drop_at_budget"
    return pd.DataFrame([{"toxic share %": ratio_label(ratio), "tokens seen": int(tokens), "seeds": len(group),
                          "best probe accuracy %": _cell(group["probe_best_accuracy"], 1, 0, 100),
                          f"{measure} drop at matched cost (points)": _cell(group[drop], 1)}
                         for (ratio, tokens), group in dynamics.groupby(["ratio", "tokens_seen"])])


def plot_dynamics(dynamics: pd.DataFrame, path: Path, measure: str) -> None:
    """The dynamics table's means against the tokens seen, each shaded by its 95 % t interval."""
    drop = f"curve_{measure}_drop_at_budget"
    colour = colours([ratio_label(r) for r in sorted(dynamics["ratio"].unique())])
    with figure(path, panels=2, title="Training dynamics (mean, 95 % t interval over seeds)") as (accuracy, steer):
        for ratio, group in dynamics.groupby("ratio"):
            label = f"{ratio_label(ratio)} % (n={group['seed'].nunique()})"
            for axis, column in ((accuracy, "probe_best_accuracy"), (steer, drop)):
                found = group.groupby("tokens_seen")[column].apply(t_interval)
                tokens = found.index.to_numpy()
                axis.plot(tokens, [i.mean for i in found], marker="o", label=label, color=colour[ratio_label(ratio)])
                axis.fill_between(tokens, [i.low for i in found], [i.high for i in found], alpha=0.15,
                                  color=colour[ratio_label(ratio)])
        accuracy.set(xlabel="tokens seen", ylabel="best head probe accuracy %")
        steer.set(xlabel="tokens seen", ylabel=f"{measure} drop at matched cost (points)")


def rivals_section(client: MlflowClient, runs: pd.DataFrame, folder: Path,
                   measure: str = "insult_probability") -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """The rivals table, the attack table and figure, the dynamics table and figure: whichever the runs carry."""
    tables, figures = {}, []
    table = rivals_table(runs, measure)
    if not table.empty and (~table["method"].isin((UNTREATED, RECIPE))).any():  # a rival ran beside them
        tables[RIVALS_TITLE] = table
    curves = attack_curves(runs, measure)
    if not curves.empty:
        tables[ATTACK_TITLE] = attack_table(curves)
        plot_attack(curves, folder / "attack.png", measure)
        figures.append(folder / "attack.png")
    dynamics = load_dynamics(client, runs)
    if not dynamics.empty:
        tables[DYNAMICS_TITLE] = dynamics_table(dynamics, measure)
        plot_dynamics(dynamics, folder / "dynamics.png", measure)
        figures.append(folder / "dynamics.png")
    return tables, figures
