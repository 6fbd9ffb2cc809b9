"""The MLflow edge: one run per job, named by its point of the sweep.

A job is identified by the key of its plan's last stage (`detox.core.plan.Plan.key`). A job whose run is
already FINISHED is not run again (its run is left as it is, so the UI's duration stays the job's
own); one whose run failed or was killed re-opens that run instead of adding a row. Each run carries
its params, every metric, the resolved config, the code version and which stages came from the cache
(`cache.*` tags, as they were when the run was made). Artifacts of a sqlite store live under the
job's `root` (`<root>/mlartifacts`); a tracking server keeps them in its own artifact store.

A tracking URI's credentials never reach what is printed, logged or recorded: MLflow is handed an
http(s) URI without them (they go to MLFLOW_TRACKING_USERNAME / _PASSWORD, `detox.core.redact`), and
the logged config and params show every URI through `redact`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import mlflow
from filelock import FileLock
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException

from detox.core.redact import redact, to_environment
from detox.job import JobConfig

JOB_KEY_TAG = "detox.job_key"


def code_version() -> dict[str, str]:
    """The git commit of the checkout this code runs from (and whether it has local changes)."""
    repo = Path(__file__).resolve().parents[1]
    tags = {"detox.version": version("detox")}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True)
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
        tags["detox.git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["detox.git_dirty"] = "unknown"  # not a git checkout (e.g. an installed wheel)
    return tags


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def experiment_id(job: JobConfig) -> str:
    """The job's experiment, created on first use with its artifacts under `root` for a sqlite store."""
    return open_experiment(job.tracking_uri, job.mlflow.experiment, Path(job.root))


def open_experiment(tracking_uri: str, name: str, root: Path) -> str:
    """The experiment `name` at `tracking_uri`, created on first use with its artifacts under `root` for a
    sqlite store."""
    mlflow.set_tracking_uri(to_environment(tracking_uri))  # the credentials of an http(s) URI to MLflow's variables
    sqlite = tracking_uri.startswith("sqlite:///")
    # Parallel jobs (hydra/launcher=processes) must not create one sqlite store or experiment at the
    # same moment: MLflow's schema migration and experiment creation race otherwise.
    with FileLock(tracking_uri.removeprefix("sqlite:///") + ".lock") if sqlite else contextlib.nullcontext():
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (root.resolve() / "mlartifacts").as_uri() if sqlite else None
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except MlflowException as error:  # a parallel job on another machine created it first (servers)
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return mlflow.get_experiment_by_name(name).experiment_id


def log_check(tracking_uri: str, experiment: str, root: Path, run_name: str, params: dict[str, str],
              metrics: dict[str, float], artifacts: list[Path]) -> str:
    """One run of a check beside the study (detox-scorer-check): its params, metrics and files; its id."""
    with mlflow.start_run(experiment_id=open_experiment(tracking_uri, experiment, root), run_name=run_name) as run:
        mlflow.set_tags(code_version())
        mlflow.log_params({name: redact(str(value)) for name, value in params.items()})
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id


@dataclass
class Outcome:
    """What a job hands to MLflow."""

    metrics: dict[str, float]
    cache_hits: dict[str, bool] = field(default_factory=dict)  # stage -> True when it came from the cache
    artifacts: list[Path] = field(default_factory=list)  # files to attach to the run
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> (step, value)


def track(job: JobConfig, key: str, spec: dict, params: dict[str, str], resolved_config: str, run_name: str,
          work: Callable[[], Outcome], log=print) -> tuple[str, Outcome]:
    """Run `work` inside the job's MLflow run and log its outcome, unless the job already finished.

    `params` are the few the comparison table groups by (ratio, seed, method, strength, setting, ...);
    the whole result-determining `spec` is logged flat beside them. A failing job leaves its run FAILED.
    """
    experiment = experiment_id(job)
    previous = mlflow.search_runs([experiment], filter_string=f"tags.`{JOB_KEY_TAG}` = '{key}'",
                                  output_format="list", max_results=1)
    if previous and previous[0].info.status == RunStatus.to_string(RunStatus.FINISHED):
        run = previous[0]
        log(f"already finished as MLflow run {run.info.run_id} ({run_name}): nothing to do")
        return run.info.run_id, Outcome(metrics=run.data.metrics)
    opened = mlflow.start_run(run_id=previous[0].info.run_id) if previous else \
        mlflow.start_run(experiment_id=experiment, run_name=run_name)
    with opened as run:
        mlflow.set_tags({JOB_KEY_TAG: key, **code_version()})
        mlflow.log_params({name: redact(value) for name, value in {**flatten(spec, "cfg."), **params}.items()})
        mlflow.log_text(redact(resolved_config), "config.yaml")  # mlflow.tracking_uri without its password
        outcome = work()
        mlflow.log_metrics(outcome.metrics)
        mlflow.set_tags({f"cache.{stage}": "hit" if hit else "built" for stage, hit in outcome.cache_hits.items()})
        if outcome.cache_hits:
            mlflow.set_tag("cache.all_hit", str(all(outcome.cache_hits.values())).lower())
        for path in outcome.artifacts:
            mlflow.log_artifact(str(path))
        client = mlflow.tracking.MlflowClient()
        for name, points in outcome.histories.items():
            if client.get_metric_history(run.info.run_id, name):
                continue  # a re-opened run logged it the first time
            history = [Metric(name, value, 0, step) for step, value in points]
            for start in range(0, len(history), 1000):  # log_batch takes at most 1000 metrics
                client.log_batch(run.info.run_id, metrics=history[start:start + 1000])
        return run.info.run_id, outcome
