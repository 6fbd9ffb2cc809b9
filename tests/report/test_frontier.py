"""Trade-off curves: reading a budget off a curve (against hand and brute-force computations), the
relative measures, the intervals over seeds and the power statements (against numpy and a simulation),
the curve method's config, and a tiny end-to-end run from the curve stage to the report's figure."""

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import compose_job
from scipy import stats

from detox.core import tradeoff
from detox.core.schema import ConfigError
from detox.job import JobConfig
from detox.report import ReportConfig, build_report
from detox.report.frontier import (
    bootstrap_difference,
    bootstrap_mean,
    detectable_difference,
    frontier_table,
    holm,
    load_curves,
    power_table,
)
from detox.search import curve_drop_objective


def points(alpha, ce, tox, hostile=None, well_formed=None, toxigen=None):
    rows = []
    for i, a in enumerate(alpha):
        row = {"alpha": a, "ce_loss": ce[i], "insult_probability": tox[i],
               "well_formed": 100.0 if well_formed is None else well_formed[i]}
        if hostile is not None:
            row["ce_hostile"] = hostile[i]
        if toxigen is not None:
            row["toxigen"] = toxigen[i]
        rows.append(row)
    return rows


def curve_of(*args, **kwargs):
    return tradeoff.Curve.from_points(points(*args, **kwargs), ["insult_probability", "toxigen"])


# ---------------------------------------------------------------- reading a curve

def test_the_budget_is_read_off_the_curve_by_linear_interpolation():
    # costs 0, .01, .03, .06: a budget of .02 is crossed half-way from alpha 1 to 2
    curve = curve_of([0, 1, 2, 3], [0.70, 0.71, 0.73, 0.76], [40, 30, 20, 10])
    matched = tradeoff.at_budget(curve, 0.02, 95)
    assert matched.reached and matched.alpha == pytest.approx(1.5) and matched.cost == pytest.approx(0.02)
    assert matched.toxicity["insult_probability"] == pytest.approx(25.0)
    m = tradeoff.summary(curve, 0.02, 95, fixed_alpha=2.5)
    assert m["curve_insult_probability_drop_at_budget"] == pytest.approx(15.0)
    assert m["curve_insult_probability_removed_at_budget"] == pytest.approx(100 * 15 / 40)
    assert m["curve_insult_probability_at_alpha"] == pytest.approx(15.0)  # half-way from 20 to 10
    assert m["curve_insult_probability_removed_at_alpha"] == pytest.approx(100 * 25 / 40)
    assert m["curve_ce_tax_at_alpha"] == pytest.approx(0.045)


def test_the_hostile_cost_and_the_well_formed_floor_bind_where_they_come_first():
    # clean costs stay tiny; hostile costs .005, .04: crossing at t = (.02 - .005) / (.04 - .005)
    hostile = tradeoff.at_budget(curve_of([0, 1, 2], [0.7, 0.7, 0.7], [40, 30, 10], hostile=[0.8, 0.805, 0.84]), 0.02, 95)
    t = 0.015 / 0.035
    assert hostile.alpha == pytest.approx(1 + t) and hostile.toxicity["insult_probability"] == pytest.approx(30 - 20 * t)
    # well-formed 100, 99, 90: the floor of 95 is crossed at t = 4 / 9, before any CE cost counts
    floor = tradeoff.at_budget(curve_of([0, 1, 2], [0.7, 0.7, 0.7], [40, 30, 10], well_formed=[100, 99, 90]), 0.02, 95)
    assert floor.alpha == pytest.approx(1 + 4 / 9) and floor.toxicity["insult_probability"] == pytest.approx(30 - 20 * 4 / 9)


def test_not_steering_is_always_allowed_and_a_budget_beyond_the_curve_says_so():
    curve = curve_of([0, 1, 2], [0.70, 0.80, 0.90], [40, 30, 20])
    none = tradeoff.at_budget(curve, 0.0, 95)
    assert none.alpha == 0 and none.toxicity["insult_probability"] == 40.0
    everything = tradeoff.at_budget(curve, 5.0, 95)
    assert not everything.reached and everything.toxicity["insult_probability"] == 20.0
    broken = curve_of([0, 1], [0.7, 0.7], [40, 10], well_formed=[50, 50])  # even the unsteered model is below the floor
    assert tradeoff.at_budget(broken, 1.0, 95).toxicity["insult_probability"] == 40.0


def test_the_toxicity_is_read_at_the_crossing_not_at_its_lowest_point():
    # toxicity dips at alpha 1 and rises again: the reading is the curve at the crossing (alpha 2.5,
    # half-way from 35 to 30), not the dip, which noise alone would put below the truth
    curve = curve_of([0, 1, 2, 3, 4], [0.70, 0.705, 0.71, 0.73, 0.76], [40, 20, 35, 30, 0])
    matched = tradeoff.at_budget(curve, 0.02, 95)
    assert matched.alpha == pytest.approx(2.5) and matched.toxicity["insult_probability"] == pytest.approx(32.5)
    # steering that raises toxicity reads as a negative drop, not as none
    worse = tradeoff.summary(curve_of([0, 1, 2], [0.70, 0.71, 0.73], [40, 44, 48]), 0.02, 95, fixed_alpha=1)
    assert worse["curve_insult_probability_drop_at_budget"] == pytest.approx(-6.0)


def test_the_crossing_is_found_on_a_monotone_fit_of_the_cost():
    # the cost dips back under the budget at alpha 3 (noise): the isotonic fit pools alphas 2 and 3 at
    # (.03 + .01) / 2 = .02, so the dial runs to alpha 3 and stops before 4 (fit .05): t = 0
    curve = curve_of([0, 1, 2, 3, 4], [0.70, 0.705, 0.73, 0.71, 0.75], [40, 35, 30, 25, 20])
    matched = tradeoff.at_budget(curve, 0.02, 95)
    assert matched.alpha == pytest.approx(3.0) and matched.toxicity["insult_probability"] == pytest.approx(25.0)


def test_reading_agrees_with_a_brute_force_walk_along_a_fine_grid():
    rng = np.random.default_rng(3)
    for _ in range(30):
        alpha = np.concatenate([[0], np.cumsum(rng.uniform(0.1, 1, 6))])
        cost = np.concatenate([[0], np.cumsum(rng.uniform(0, 0.02, 6))])  # non-decreasing: its own monotone fit
        tox = rng.uniform(0, 60, 7)
        budget = rng.uniform(0, 0.1)
        curve = curve_of(alpha, 0.7 + cost, tox)
        fine = np.linspace(0, alpha[-1], 200_001)
        fine_cost, fine_tox = np.interp(fine, alpha, cost), np.interp(fine, alpha, tox)
        over = np.flatnonzero(fine_cost > budget + 1e-9)
        expected = fine_tox[max(over[0] - 1, 0)] if len(over) else fine_tox[-1]  # the last allowed point
        found = tradeoff.at_budget(curve, budget, 95).toxicity["insult_probability"]
        assert found == pytest.approx(expected, abs=1e-2)


def test_a_malformed_curve_is_named():
    with pytest.raises(ValueError, match="start at 0 and increase"):
        curve_of([0.5, 1], [0.7, 0.7], [1, 1])
    with pytest.raises(ValueError, match="at least 2 points"):
        curve_of([0], [0.7], [1])
    with pytest.raises(ValueError, match="not all finite"):
        curve_of([0, 1], [0.7, math.nan], [1, 1])
    with pytest.raises(ValueError, match="outside the curve"):
        tradeoff.summary(curve_of([0, 1], [0.7, 0.7], [1, 1]), 0.02, 95, fixed_alpha=2)


def test_the_curve_search_objective_is_minus_the_drop():
    m = {"curve_insult_probability_drop_at_budget": 12.5, "curve_insult_probability_unsteered": 40.0,
         "curve_cost_at_budget": 0.02}
    assert curve_drop_objective(m, "insult_probability") == {
        "search_objective": -12.5, "search_feasible": 1.0, "search_ce_cost": 0.02, "search_unsteered": 40.0,
        "search_drop": 12.5}
    with pytest.raises(ValueError, match="curve_toxigen_drop_at_budget"):
        curve_drop_objective(m, "toxigen")


# ---------------------------------------------------------------- intervals and power

def test_the_bootstrap_interval_is_numpys_percentiles_and_stays_inside_the_values():
    values = [0.0, 3.0, 100.0, 100.0]
    found = bootstrap_mean(values, n_boot=500, seed=7)
    means = np.random.default_rng(7).choice(values, (500, 4)).mean(axis=1)  # the same draws, by hand
    assert (found.low, found.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert found.mean == pytest.approx(50.75) and 0 <= found.low <= found.high <= 100
    assert math.isnan(bootstrap_mean([5.0]).low) and bootstrap_mean([5.0, math.nan]).n == 1
    low, high = bootstrap_difference([1.0, 2.0, 3.0], [11.0, 12.0, 13.0], n_boot=500)
    assert 8 <= low <= 10 <= high <= 12


@pytest.mark.parametrize("n1, n2", [(5, 5), (10, 10), (3, 0)])
def test_the_detectable_difference_has_80_percent_power_in_simulation(n1, n2):
    delta = detectable_difference(1.0, n1, n2)
    rng = np.random.default_rng(0)
    trials = 20_000
    if n2:
        first, second = rng.normal(0, 1, (trials, n1)), rng.normal(delta, 1, (trials, n2))
        p = stats.ttest_ind(second, first, axis=1).pvalue
    else:
        p = stats.ttest_1samp(rng.normal(delta, 1, (trials, n1)), 0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.80, abs=0.015)
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * (math.sqrt(1 / n1 + 1 / n2) if n2 else 1 / math.sqrt(n1))
    assert delta > normal  # the t's heavier tails need more than the normal approximation
    assert math.isnan(detectable_difference(1.0, 1, 1)) and math.isnan(detectable_difference(0.0, 5, 5))


# ---------------------------------------------------------------- the report's tables from logged curves

def logged_curve(ratio, seed, direction="mass_mean"):
    """A known curve: the drop at the budget 0.02 grows with the ratio; seeds differ by 2 points."""
    slope = 10 + ratio + 2 * seed if direction == "mass_mean" else 1.0
    return points([0, 1, 2, 4], [0.70, 0.71, 0.73, 0.80], [40 + seed, 40 + seed - slope, 40 + seed - 2 * slope, 0],
                  hostile=[0.80, 0.80, 0.81, 0.90], toxigen=[30, 20, 10, 0])


@pytest.fixture(scope="module")
def curve_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("curves")
    for ratio in (0, 10):
        for seed in (1, 2, 3):
            for direction in ("mass_mean", "random"):
                strength = "alpha=2 curve" if direction == "mass_mean" else "alpha=2 random(matched_norm) curve"
                with mlflow.start_run():
                    mlflow.log_params({"ratio": str(ratio), "seed": str(seed), "method": "iti_curve", "strength": strength,
                                       "task": "study", "setting": f"{ratio}-{direction}", "iti_alpha": "2",
                                       "iti_direction": direction, "base_model": f"{ratio}-{seed}"})
                    mlflow.log_metrics({"probe_best_accuracy": 80 + ratio / 10 + seed,
                                        "entanglement_best_head": 0.4 + 0.01 * seed})
                    mlflow.log_text(json.dumps({"points": logged_curve(ratio, seed, direction)}), "curve.json")
    return uri, root


def test_the_frontier_table_holds_each_seeds_reading_with_its_interval(curve_store):
    uri, _ = curve_store
    runs = mlflow.search_runs(experiment_names=["curves"])
    curves = load_curves(mlflow.MlflowClient(uri), runs)
    assert len(curves) == 12 and set(curves["direction"]) == {"mass_mean", "random"}
    table = frontier_table(curves, 0.02, 95, n_boot=500)
    row = table[(table["ratio"] == "10") & (table["variant"] == "alpha=2 curve") & (table["toxicity"] == "insult prob")].iloc[0]
    # by hand: cost .01 at alpha 1 and .03 at 2, so alpha 1.5 at the budget: toxicity 40 + s - 1.5 slope
    drops = [1.5 * (10 + 10 + 2 * s) for s in (1, 2, 3)]
    assert row["drop (points)"].startswith(f"{np.mean(drops):.1f} [") and row["seeds"] == 3
    removed_alpha = [100 * 2 * (20 + 2 * s) / (40 + s) for s in (1, 2, 3)]
    assert row["removed at fixed alpha %"].startswith(f"{np.mean(removed_alpha):.1f} [")
    assert row["CE tax at fixed alpha"].startswith("0.030 [") and row["drop seen"] == "yes"
    control = table[(table["ratio"] == "0") & (table["variant"].str.contains("random"))
                    & (table["toxicity"] == "insult prob")].iloc[0]
    assert control["drop (points)"].startswith("1.5 [")  # every seed alike: an interval of one value


def test_the_power_table_states_each_claims_detectable_difference(curve_store):
    uri, _ = curve_store
    runs = mlflow.search_runs(experiment_names=["curves"])
    curves = load_curves(mlflow.MlflowClient(uri), runs)
    table = power_table(runs, curves, 0.0, 0.02, 95, n_boot=500)
    assert list(dict.fromkeys(table["claim"])) == ["(a) probes", "(b) detoxification", "(b) random control",
                                                   "(c) entanglement"]
    assert "configuration" not in table  # one configuration: nothing to name
    drop = table[table["measure"] == "insult prob drop at matched cost (points)"].iloc[0]
    first, second = [1.5 * (10 + 2 * s) for s in (1, 2, 3)], [1.5 * (20 + 2 * s) for s in (1, 2, 3)]
    sd = math.sqrt((np.var(first, ddof=1) + np.var(second, ddof=1)) / 2)
    assert drop["difference [95 % bootstrap]"].startswith(f"{np.mean(second) - np.mean(first):+.1f} [")
    assert drop["between-seed SD"] == f"{sd:.1f}" and drop["verdict"] == "differs"
    family = pd.to_numeric(table.loc[table["claim"] == "(b) detoxification", "p"], errors="coerce").dropna()
    expected = holm(family.to_numpy())[list(family.index).index(drop.name)]  # Holm over the claim's tests
    assert float(drop["p (Holm)"]) == pytest.approx(expected, rel=0.05) and expected > float(drop["p"])
    assert float(drop["detectable at 80 % power"]) == pytest.approx(detectable_difference(sd, 3, 3), abs=0.05)
    # entanglement is the same at both ratios: no difference, with the size that would have shown
    tangled = table[table["measure"] == "entanglement, best head"].iloc[0]
    assert tangled["verdict"].startswith("no difference seen; one of 0.0")  # SD 0.01 over 3 seeds a ratio


def test_holm_matches_its_step_down_by_hand():
    # sorted .005, .01, .03, .04 times 4, 3, 2, 1: .02, .03, .06, .04, made non-decreasing: .06 for the last two
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])


def test_the_power_table_never_pools_two_configurations_of_one_ratio(curve_store):
    """Two configurations of the same base models (say 4 and 16 steered heads) are compared apart: each
    base model counts once in each."""
    uri, _ = curve_store
    runs = mlflow.search_runs(experiment_names=["curves"])
    curves = load_curves(mlflow.MlflowClient(uri), runs)
    twice = pd.concat([curves.assign(configuration="iti.top_k_heads=4"), curves.assign(configuration="iti.top_k_heads=16")])
    table = power_table(runs.iloc[:0], twice, 0.0, 0.02, 95, n_boot=200)
    drops = table[(table["measure"] == "insult prob drop at matched cost (points)") & (table["claim"] == "(b) detoxification")]
    assert sorted(drops["configuration"]) == ["iti.top_k_heads=16", "iti.top_k_heads=4"]
    assert set(drops["n"]) == {"3 vs 3"}


# ---------------------------------------------------------------- the method and a tiny end-to-end run

def test_the_curve_methods_strengths_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="method.alphas"):
        JobConfig.from_dict(compose_job("experiment=smoke", "method=iti_curve", "method.alphas=[0.5,1]"))
    with pytest.raises(ConfigError, match="iti.alpha=9"):
        JobConfig.from_dict(compose_job("experiment=smoke", "method=iti_curve", "iti.alpha=9", "method.alphas=[0,1,4]"))
    with pytest.raises(ConfigError, match="method=iti_curve"):
        JobConfig.from_dict(compose_job("experiment=smoke", "method=iti", "search.objective=curve_drop"))


def test_a_tiny_curve_run_logs_its_curve_and_the_report_draws_the_frontier(tmp_path):
    from detox import jobs

    results = {}
    for ratio in (0, 10):
        job = JobConfig.from_dict(compose_job("experiment=smoke", f"root={tmp_path}", "method=iti_curve", f"ratio={ratio}",
                                              "iti.alpha=1", "method.alphas=[0,0.5,1,4]", "search.objective=curve_drop"))
        run_id, outcome = jobs.run(job, "", log=lambda text: None)
        results[ratio] = (run_id, outcome.metrics)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for run_id, metrics in results.values():
        path = client.download_artifacts(run_id, "curve.json", dst_path=str(tmp_path / run_id))
        curve = json.loads(Path(path).read_text())
        assert [p["alpha"] for p in curve["points"]] == [0, 0.5, 1, 4]
        read = tradeoff.summary(tradeoff.Curve.from_points(curve["points"], ["insult_probability", "toxigen"]),
                                0.02, 95.0, 1.0)
        logged = client.get_run(run_id).data.metrics
        for name, value in read.items():
            assert logged[name] == pytest.approx(value, nan_ok=True), name
        assert logged["search_objective"] == pytest.approx(-read["curve_insult_probability_drop_at_budget"])
    report = build_report(ReportConfig(f"sqlite:///{tmp_path}/mlflow.db", "detox-smoke", out=str(tmp_path / "report"),
                                       n_boot=50, summary_run=False), log=lambda text: None)
    assert (tmp_path / "report" / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    frontier = next(t for title, t in report.tables.items() if title.startswith("Trade-off curves"))
    assert set(frontier["ratio"]) == {"0", "10"} and set(frontier["seeds"]) == {1}
    assert "frontier" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_the_negative_control_keeps_the_familys_false_positive_rate():
    """Seeds of one ratio split into two groups (no effect by construction), 8 measures a claim: the
    family of tests, Holm-corrected, calls a difference in 5 % of simulated studies (within two
    standard errors of the simulation), where
    uncorrected tests would call one in about a third of them."""
    from detox.report.frontier import comparison

    rng = np.random.default_rng(0)
    studies, any_raw, any_holm = 300, 0, 0
    for _ in range(studies):
        values = rng.normal(25, 4, (8, 10))  # 8 measures, 10 seeds of one ratio
        p = np.array([comparison(v[:5], v[5:], n_boot=10, digits=1)["raw p"] for v in values])
        any_raw += (p < 0.05).any()
        any_holm += (holm(p) < 0.05).any()
    print(f"\nnegative control: a difference called in {100 * any_raw / studies:.1f} % of studies uncorrected, "
          f"{100 * any_holm / studies:.1f} % after Holm")
    noise = 2 * math.sqrt(0.05 * 0.95 / studies)  # two standard errors of a rate of 5 % over these studies
    assert any_holm / studies <= 0.05 + noise and any_raw / studies > 0.2
