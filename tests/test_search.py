"""The best-ratio search: its objective against hand computations, its config, and a real Optuna sweep
of study jobs into a temporary MLflow store."""

import math

import mlflow
import pytest
import yaml
from helpers import REPO, compose_job, launch
from omegaconf import OmegaConf

from detox.core.schema import ConfigError
from detox.job import JobConfig
from detox.search import INFEASIBLE, matched_cost_objective, within_budget
from detox.tracking import flatten

UNSTEERED = {"insult_probability": 40.0, "ce_loss": 0.70, "ce_hostile": 0.80, "well_formed": 100.0}


def steered(**changes):
    return {**UNSTEERED, "insult_probability": 25.0, **changes}


def test_a_steering_within_budget_scores_its_toxicity():
    m = matched_cost_objective(steered(ce_loss=0.715, ce_hostile=0.82), UNSTEERED, "insult_probability", 0.02, 95)
    assert m["search_objective"] == 25.0 and m["search_feasible"] == 1.0
    assert m["search_ce_cost"] == pytest.approx(0.02) and m["search_drop"] == 15.0 and m["search_unsteered"] == 40.0


@pytest.mark.parametrize("changes, cost", [
    ({"ce_hostile": 0.85}, 0.05),                       # hostile-context CE beyond budget, clean within
    ({"ce_loss": 1.0}, 0.30),                           # clean CE beyond budget
    ({"ce_loss": 0.71, "well_formed": 90.0}, 0.01),     # cheap, but breaks the grammar
])
def test_a_steering_beyond_budget_ranks_after_every_feasible_one(changes, cost):
    m = matched_cost_objective(steered(**changes), UNSTEERED, "insult_probability", 0.02, 95)
    assert m["search_feasible"] == 0.0
    assert m["search_objective"] == pytest.approx(INFEASIBLE + cost) and m["search_objective"] > 100.0


def test_without_hostile_text_only_the_clean_cost_counts():
    clean_only = {k: v for k, v in UNSTEERED.items() if k != "ce_hostile"}
    m = matched_cost_objective({**clean_only, "insult_probability": 10.0, "ce_loss": 0.71}, clean_only,
                               "insult_probability", 0.02, 95)
    assert m["search_objective"] == 10.0 and m["search_ce_cost"] == pytest.approx(0.01)


def test_a_missing_or_nan_metric_names_itself():
    with pytest.raises(ValueError, match="toxigen"):
        matched_cost_objective(steered(), UNSTEERED, "toxigen", 0.02, 95)
    with pytest.raises(ValueError, match="ce_loss"):
        matched_cost_objective(steered(ce_loss=math.nan), UNSTEERED, "insult_probability", 0.02, 95)


def test_within_budget_includes_its_edge():
    assert within_budget(0.02, 0.0, 95.0, 0.02, 95.0) and not within_budget(0.0201, 0.0, 95.0, 0.02, 95.0)


def test_the_search_needs_a_method_and_a_measured_metric():
    with pytest.raises(ConfigError, match="choose a method"):
        JobConfig.from_dict(compose_job("search.objective=matched_cost"))
    with pytest.raises(ConfigError, match="search.objective"):
        JobConfig.from_dict(compose_job("method=iti", "search.objective=best"))


def test_best_ratio_composes_an_optuna_search_of_iti_jobs():
    with_hydra = compose_job("experiment=best_ratio", "hydra/sweeper=optuna")  # compose() leaves hydra/ out
    job = JobConfig.from_dict({k: v for k, v in with_hydra.items() if k != "hydra"})
    assert job.method.name == "iti" and job.search.objective == "matched_cost"
    assert job.mlflow.experiment == "detox-best-ratio"
    experiment = yaml.safe_load((REPO / "conf/experiment/best_ratio.yaml").read_text())
    params = experiment["hydra"]["sweeper"]["params"]
    assert params == {"ratio": "int(interval(0, 25))", "iti.alpha": "tag(log, interval(0.5, 8))"}


def smoke_overrides() -> list[str]:
    """conf/experiment/smoke.yaml as command-line overrides, to run another experiment at smoke size."""
    smoke = OmegaConf.to_container(OmegaConf.load(REPO / "conf/experiment/smoke.yaml"))
    del smoke["mlflow"]
    return [f"{key}={value}" for key, value in flatten(smoke).items()]


@pytest.mark.slow  # an Optuna sweep of three ITI jobs (tests/test_launch.py's sweep keeps sweep -> MLflow fast)
def test_an_optuna_search_logs_every_trial_and_finds_the_lowest_objective(tmp_path):
    result = launch("-m", "experiment=best_ratio", f"root={tmp_path}", *smoke_overrides(), "hydra/launcher=basic",
                    "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.n_startup_trials=3",
                    "ratio=int(interval(0, 2))", "hydra.sweep.subdir=${hydra.job.num}", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["detox-best-ratio"], filter_string="attributes.status = 'FINISHED'")
    trials = runs[runs["metrics.search_objective"].notna()]
    assert len(trials) == 3 and set(trials["params.method"]) == {"iti"}
    assert set(trials["params.ratio"]) <= {"0", "1", "2"}  # whole percents, as int(interval(...)) asks
    for _, trial in trials.iterrows():  # each trial priced against its own base model, unsteered
        drop = trial["metrics.search_unsteered"] - trial["metrics.insult_probability"]
        assert trial["metrics.search_drop"] == pytest.approx(drop)
        expected = (trial["metrics.insult_probability"] if trial["metrics.search_feasible"]
                    else INFEASIBLE + trial["metrics.search_ce_cost"])
        assert trial["metrics.search_objective"] == pytest.approx(expected)
    best = yaml.safe_load((tmp_path / "sweep/optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(trials["metrics.search_objective"].min())
    assert "Best-ratio search (3 trials)" in result.stdout + result.stderr
    assert (tmp_path / "sweep/report/search_trials.png").is_file()
