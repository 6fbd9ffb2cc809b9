"""Tracking at scale: parallel jobs log to an MLflow server on PostgreSQL, each run landing once."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.servers import mlflow_server, postgres, postgres_binaries

pytestmark = [
    pytest.mark.slow,  # starts PostgreSQL, an MLflow server (~10 s) and two MLflow clients
    pytest.mark.skipif(postgres_binaries() is None, reason="no PostgreSQL binaries (initdb, pg_ctl) on PATH"),
]

JOB = textwrap.dedent("""
    import sys

    import mlflow

    uri, name = sys.argv[1], sys.argv[2]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("detox-scale")
    with mlflow.start_run(run_name=name):
        mlflow.log_param("job", name)
        for step in range(5):
            mlflow.log_metric("pretrain_loss", 10.0 - step, step=step)
""")


def test_two_processes_log_to_a_postgres_backed_server_once_each(tmp_path):
    psycopg2 = pytest.importorskip("psycopg2", reason="the MLflow server needs psycopg2 for PostgreSQL")
    with postgres() as db, mlflow_server(db, tmp_path / "artifacts") as uri:
        env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}
        import mlflow

        mlflow.MlflowClient(uri).create_experiment("detox-scale")  # beforehand: two creators would race
        jobs = [subprocess.Popen([sys.executable, "-c", JOB, uri, name], env=env, stderr=subprocess.PIPE, text=True)
                for name in ("job-a", "job-b")]
        for job in jobs:
            assert job.wait(timeout=180) == 0, job.stderr.read()[-2000:]

        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("detox-scale").experiment_id])
        assert sorted(r.info.run_name for r in runs) == ["job-a", "job-b"]
        for run in runs:
            assert run.data.params == {"job": run.info.run_name} and run.info.status == "FINISHED"
            history = client.get_metric_history(run.info.run_id, "pretrain_loss")
            assert sorted((m.step, m.value) for m in history) == [(s, 10.0 - s) for s in range(5)]
        with psycopg2.connect(db.replace("+psycopg2", "")) as connection, connection.cursor() as cursor:  # the rows are in PostgreSQL
            cursor.execute("SELECT name FROM runs ORDER BY name")
            assert cursor.fetchall() == [("job-a",), ("job-b",)]


FSDP_SWEEP = ("-m", "hydra/launcher=processes", "trainer=fsdp", "trainer.devices=2", "trainer.accelerator=cpu",
              "trainer.precision=32-true", "trainer.micro_batch_size=4", "experiment=smoke", "ratio=0,10", "seed=1")


def test_sharded_sweep_of_parallel_jobs_fills_one_server_once_each(tmp_path):
    """Two jobs at once, each pre-training with fsdp on 2 CPU processes, logging to the server."""
    from conftest import launch

    with postgres() as db, mlflow_server(db, tmp_path / "artifacts") as uri:
        result = launch(*FSDP_SWEEP, f"root={tmp_path / 'root'}", f"mlflow.tracking_uri={uri}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]

        import mlflow

        client = mlflow.MlflowClient(uri)
        runs = [r for r in client.search_runs([client.get_experiment_by_name("detox-smoke").experiment_id])
                if r.data.tags.get("detox.summary") != "true"]
        assert sorted(r.info.run_name for r in runs) == ["ratio=0 seed=1 method=none", "ratio=10 seed=1 method=none"]
        assert all(r.info.status == "FINISHED" and r.data.metrics["pretrain_steps"] > 0 for r in runs)
        assert all(r.data.params["cfg.pretrain.trainer.strategy"] == "fsdp" for r in runs)
