"""The report's rivals section (detox.report.rivals) on runs as MLflow's search_runs gives them."""

import math

import numpy as np
import pandas as pd
import pytest

from detox.core.stats import holm
from detox.report.rivals import attack_curves, attack_table, plot_attack, rivals_table


def runs_frame() -> pd.DataFrame:
    """Two seeds at ratio 10: none, the recipe (iti_curve, read at its budget), filter and caa."""
    rows = []
    for seed, shift in (("1", 0.0), ("2", 2.0)):
        common = {"params.ratio": "10", "params.seed": seed, "params.task": "study", "status": "FINISHED"}
        rows += [
            {**common, "params.method": "none", "params.strength": "-", "metrics.insult_probability": 40 + shift,
             "metrics.ce_loss": 2.0, **{f"metrics.tamper_insult_probability_step_{s}": v + shift
                                        for s, v in ((0, 40), (50, 50), (100, 60))}},
            {**common, "params.method": "iti_curve", "params.strength": "alpha=1 curve", "metrics.insult_probability": 10.0,
             "metrics.ce_loss": 2.3, "metrics.curve_insult_probability_at_budget": 20 + shift,
             "metrics.curve_cost_at_budget": 0.02},
            {**common, "params.method": "filter", "params.strength": "score>=0.5", "metrics.insult_probability": 30 + 2 * shift,
             "metrics.ce_loss": 2.01, **{f"metrics.tamper_insult_probability_step_{s}": v + shift
                                         for s, v in ((0, 30), (50, 36), (100, 50))}},
            {**common, "params.method": "caa", "params.strength": "alpha=1 all layers", "metrics.insult_probability": 5.0,
             "metrics.ce_loss": 2.5, "metrics.curve_insult_probability_at_budget": 25 + 3 * shift,
             "metrics.curve_cost_at_budget": 0.015},
        ]
    return pd.DataFrame(rows).assign(run_id=[f"r{i}" for i in range(len(rows))])


def test_holm_adjusts_step_down_and_keeps_nan_out():
    adjusted = holm([0.01, 0.04, np.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06) and math.isnan(adjusted[2])  # monotone: max(0.04*1, 0.06)


def test_rivals_table_reads_each_method_at_its_matched_cost_against_the_untreated_model():
    table = rivals_table(runs_frame()).set_index("method")
    assert list(table.index) == ["none", "iti_curve", "filter", "caa"]
    assert table.loc["iti_curve", "insult_probability % at matched cost"].startswith("21.0 [")  # the curve's, not 10
    assert table.loc["iti_curve", "removed (points)"].startswith("20.0")
    assert table.loc["filter", "removed (% of untreated)"].startswith("22 [")  # 10/40 and 8/42: 25 % and 19 %
    assert table.loc["filter", "CE tax (nats)"] == "0.010 [0.010, 0.010]"
    assert table.loc["caa", "CE tax (nats)"].startswith("0.015")  # its curve's cost at the budget
    assert table.loc["filter", "vs recipe (mean diff)"] == "+11.0"
    assert table.loc["iti_curve", "p (Holm)"] == "-"  # the recipe is not tested against itself
    assert float(table.loc["filter", "p (Holm)"]) <= 1 and float(table.loc["caa", "p (Holm)"]) <= 1
    # filter minus the recipe: +10 and +12, so the mean's standard error is SD / sqrt(2) = 1; two tests at the
    # ratio (filter, caa; none's differences do not vary), so Holm's strictest level is 0.025: the detectable
    # difference is the shift that puts 80 % of the noncentral t above the critical value
    from scipy import stats
    detectable = float(table.loc["filter", "detectable (80 % power)"])
    assert stats.nct.sf(stats.t.ppf(1 - 0.025 / 2, df=1), 1, detectable) == pytest.approx(0.80, abs=0.01)
    assert table.loc["iti_curve", "detectable (80 % power)"] == "-"


def test_intervals_stay_within_what_the_measure_can_be():
    frame = runs_frame()
    filtered = frame["params.method"].eq("filter")
    frame.loc[filtered, "metrics.insult_probability"] = [0.0, 1.0]  # t interval of 0 and 1: [-5.9, 6.9]
    table = rivals_table(frame).set_index("method")
    assert table.loc["filter", "insult_probability % at matched cost"] == "0.5 [0.0, 6.9]"
    assert table.loc["filter", "removed (% of untreated)"] == "99 [84, 100]"  # 100 % and 97.6 %: up to 114 unclipped
    frame.loc[filtered, "metrics.insult_probability"] = [0.0, -0.0001]
    assert rivals_table(frame).set_index("method").loc["filter", "insult_probability % at matched cost"] == \
        "0.0 [0.0, 0.0]"  # never "-0.0"


def test_the_random_control_beside_the_recipe_is_compared_with_it_not_taken_for_it():
    """A study with ITI's random-direction control (experiment=cpu_study): the recipe is the concept's
    direction alone, so every other row's difference is against it, seed by seed, not against a mix."""
    frame = runs_frame()
    control = frame[frame["params.method"].eq("iti_curve")].assign(**{
        "params.strength": "alpha=1 random(matched_norm) curve", "params.iti_direction": "random",
        "metrics.curve_insult_probability_at_budget": [41.0, 43.0], "run_id": ["c1", "c2"]})
    frame = pd.concat([frame.assign(**{"params.iti_direction": "mass_mean"}), control], ignore_index=True)
    table = rivals_table(frame).set_index("strength")
    assert table.loc["-", "vs recipe (mean diff)"] == "+20.0"  # none 40, 42 against the recipe's 20, 22
    assert table.loc["alpha=1 random(matched_norm) curve", "vs recipe (mean diff)"] == "+21.0"
    assert table.loc["alpha=1 curve", "vs recipe (mean diff)"] == "-"


def test_attack_table_and_figure(tmp_path):
    curves = attack_curves(runs_frame())
    table = attack_table(curves).set_index("method")
    # filter removed 10 points (40 -> 30 at seed 1): half is back at 35, reached between 0 and 50 steps
    assert table.loc["filter", "steps to half back"] == str(round((50 * 5 / 6 + 50 * 5 / 6) / 2))
    assert table.loc["none", "steps to half back"] == "-"  # removed nothing
    assert table.loc["filter", "after 100 steps %"] == "51.0"
    plot_attack(curves, tmp_path / "attack.png", "insult_probability")
    assert (tmp_path / "attack.png").stat().st_size > 0


def test_the_dynamics_table_averages_each_snapshot_over_seeds(tmp_path):
    from detox.report.rivals import dynamics_table, plot_dynamics

    dynamics = pd.DataFrame([{"ratio": ratio, "seed": seed, "tokens_seen": tokens,
                              "probe_best_accuracy": 60 + tokens / 100 + int(seed),
                              "curve_insult_probability_drop_at_budget": ratio + tokens / 100 - int(seed)}
                             for ratio in (0.0, 25.0) for seed in ("1", "2", "3") for tokens in (100, 200)])
    table = dynamics_table(dynamics, "insult_probability")
    assert list(table["tokens seen"]) == [100, 200, 100, 200] and set(table["seeds"]) == {3}
    row = table[(table["toxic share %"] == "25") & (table["tokens seen"] == 200)].iloc[0]
    assert row["best probe accuracy %"].startswith("64.0 [")  # 60 + 2 + mean seed 2
    assert row["insult_probability drop at matched cost (points)"].startswith("25.0 [")  # 25 + 2 - 2
    plot_dynamics(dynamics, tmp_path / "dynamics.png", "insult_probability")
    assert (tmp_path / "dynamics.png").stat().st_size > 0
