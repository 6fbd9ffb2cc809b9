"""The phase diagram: mass-mean curves of base models in several configurations (a world knob beside
the ratio) read per configuration and ratio, checked against the drops computed by hand; a study of one
configuration has none; the report writes its table and figure."""

import mlflow
import pytest
from helpers import log_curve_run

from detox.report import ReportConfig, build_report
from detox.report.frontier import load_curves
from detox.report.phase import PHASE_TITLE, phase_section, phase_seeds, phase_table

SHARES = ("0.05", "0.3")


def drop(share: str, ratio: int, seed: int) -> float:
    """The planted drop at the budget: the budget 0.02 is crossed half-way from alpha 1 (cost .01) to 2 (.03)."""
    return 1.5 * (5 + ratio * float(share) + seed)


def store(root, shares=SHARES):
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("phase")
    for share in shares:
        for ratio in (0, 25):
            for seed in (1, 2, 3):
                for direction in ("mass_mean", "random"):
                    slope = drop(share, ratio, seed) / 1.5 if direction == "mass_mean" else 0.0
                    log_curve_run(ratio, seed, slope, direction, sources__world__clean__hostile_share=share)
    return uri


def test_each_configuration_and_ratio_holds_its_seeds_drops(tmp_path):
    uri = store(tmp_path)
    runs = mlflow.search_runs(experiment_names=["phase"])
    curves = load_curves(mlflow.MlflowClient(uri), runs)
    # the configuration names the knob, not the direction (the random control is told apart by its own)
    assert set(curves["configuration"]) == {f"sources.world.clean.hostile_share={s}" for s in SHARES}
    assert set(curves["variant"]) >= {"alpha=1 curve [sources.world.clean.hostile_share=0.3]"}
    seeds = phase_seeds(curves, 0.02, 95)
    assert set(seeds["direction"]) == {"mass_mean"}  # the random control has no place in the diagram
    table = phase_table(seeds, n_boot=200)
    assert len(table) == 4 and set(table["seeds"]) == {3}
    for _, row in table.iterrows():
        share = row["configuration"].split("=")[1]
        expected = sum(drop(share, int(row["toxic share %"]), s) for s in (1, 2, 3)) / 3
        assert float(row["drop at matched cost (points)"].split()[0]) == pytest.approx(expected, abs=0.051)
        assert row["unsteered %"].startswith("50.0 [")
        assert float(row["removed at matched cost %"].split()[0]) == pytest.approx(100 * expected / 50, abs=0.051)


def test_one_configuration_has_no_phase_diagram(tmp_path):
    uri = store(tmp_path, shares=("0.05",))
    runs = mlflow.search_runs(experiment_names=["phase"])
    curves = load_curves(mlflow.MlflowClient(uri), runs)
    assert set(curves["configuration"]) == {""} and set(curves["variant"]) == {"alpha=1 curve",
                                                                                 "alpha=1 random(matched_norm) curve"}
    assert phase_section(curves, tmp_path, 0.02, 95) == ({}, [])


def test_the_report_draws_the_phase_diagram_and_tests_each_configuration(tmp_path):
    uri = store(tmp_path)
    report = build_report(ReportConfig(tracking_uri=uri, experiment="phase", out=str(tmp_path / "report"),
                                       compare_ratios=(0.0, 25.0), summary_run=False, n_boot=50))
    assert (tmp_path / "report" / "phase.png").stat().st_size > 0
    (title,) = [t for t in report.tables if t.startswith(PHASE_TITLE)]
    assert len(report.tables[title]) == 4
    power = next(t for title, t in report.tables.items() if title.startswith("Power"))
    tested = power[(power["claim"] == "(b) detoxification") & power["measure"].str.contains("drop")]
    assert sorted(tested["configuration"]) == [f"sources.world.clean.hostile_share={s}" for s in SHARES]
    # ratio 25 adds 1.5 x 25 x share points of drop to every seed
    for config, difference in zip(tested["configuration"], tested["difference [95 % bootstrap]"]):
        assert float(difference.split()[0]) == pytest.approx(1.5 * 25 * float(config.split("=")[1]), abs=0.051)
