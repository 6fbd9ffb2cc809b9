"""The report's own run in the experiment ("report", tag `detox.summary=true`): it holds the report's
folder as artifacts, is created once and re-written by every later report, and no aggregation reads it."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

SUMMARY_TAG = "detox.summary"  # marks the report's own run, which every aggregation skips
SUMMARY_RUN_NAME = "report"
SUMMARY_FOLDER = "report"  # the summary run's artifact folder, replaced as a whole on each report


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
