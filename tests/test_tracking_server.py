"""Tracking at scale: parallel jobs log to an MLflow server on PostgreSQL, each run landing once; a
server behind MLflow's basic-auth app takes jobs authenticated by the environment and refuses others;
a tracking URI's password shows nowhere (output, logs, params, tags, the logged config).

The PostgreSQL tests skip where PostgreSQL is not installed, and fail there with CI=true (.ci/run)."""

import logging
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from base64 import b64encode

import pytest

from servers import basic_auth, mlflow_server, postgres, require_postgres


@pytest.fixture
def db():
    """A throw-away PostgreSQL; a skip where it is missing, a failure with CI=true."""
    require_postgres()
    with postgres() as uri:
        yield uri

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


@pytest.mark.slow  # starts PostgreSQL, an MLflow server (~10 s) and two MLflow clients
def test_two_processes_log_to_a_postgres_backed_server_once_each(tmp_path, db):
    import psycopg2

    with mlflow_server(db, tmp_path / "artifacts") as uri:
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


@pytest.mark.slow
def test_sharded_sweep_of_parallel_jobs_fills_one_server_once_each(tmp_path, db):
    """Two jobs at once, each pre-training with fsdp on 2 CPU processes, logging to the server."""
    from helpers import launch

    with mlflow_server(db, tmp_path / "artifacts") as uri:
        result = launch(*FSDP_SWEEP, f"root={tmp_path / 'root'}", f"mlflow.tracking_uri={uri}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]

        import mlflow

        client = mlflow.MlflowClient(uri)
        runs = [r for r in client.search_runs([client.get_experiment_by_name("detox-smoke").experiment_id])
                if r.data.tags.get("detox.summary") != "true"]
        assert sorted(r.info.run_name for r in runs) == ["ratio=0 seed=1 method=none", "ratio=10 seed=1 method=none"]
        assert all(r.info.status == "FINISHED" and r.data.metrics["pretrain_steps"] > 0 for r in runs)
        assert all(r.data.params["cfg.pretrain.trainer.strategy"] == "fsdp" for r in runs)


# --- a server behind MLflow's basic-auth app (sqlite store: no PostgreSQL needed) and credentials kept hidden

JOB_USER, JOB_PASSWORD = "detox-job", "Job-pass-4-the-cluster"  # MLflow asks for at least 12 characters


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on 127.0.0.1 with user JOB_USER created by the admin;
    yields its URI (no credentials in it)."""
    import mlflow.server

    folder = tmp_path_factory.mktemp("auth_server")
    env = basic_auth(folder / "auth")
    with mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", app_name="basic-auth", env=env) as uri:
        with pytest.MonkeyPatch.context() as patch:  # the admin's credentials, for this call only
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_AUTH_ADMIN_PASSWORD"])
            mlflow.server.get_app_client("basic-auth", tracking_uri=uri).create_user(JOB_USER, JOB_PASSWORD)
        yield uri


def status(uri: str, user: str | None = None, password: str | None = None) -> int:
    """The HTTP status of a plain REST call to the server, with basic credentials or none."""
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
    if user:
        request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow  # an MLflow server (~10 s)
def test_basic_auth_server_takes_clients_authenticated_by_the_environment_and_refuses_others(auth_server, tmp_path):
    uri = auth_server
    assert status(uri) == 401 and status(uri, JOB_USER, "wrong-password-123") == 401
    assert status(uri, JOB_USER, JOB_PASSWORD) == 200
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    refused = subprocess.run([sys.executable, "-c", JOB, uri, "anonymous"], capture_output=True, text=True,
                             env={**clean, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}, timeout=180)
    assert refused.returncode != 0 and "401" in refused.stderr
    env = {**clean, "MLFLOW_TRACKING_USERNAME": JOB_USER, "MLFLOW_TRACKING_PASSWORD": JOB_PASSWORD}
    job = subprocess.run([sys.executable, "-c", JOB, uri, "job-env"], capture_output=True, text=True, env=env,
                         timeout=180)
    assert job.returncode == 0, job.stderr[-2000:]
    assert JOB_PASSWORD not in job.stdout + job.stderr

    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", JOB_USER)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", JOB_PASSWORD)
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("detox-scale").experiment_id])
        assert [(r.info.run_name, r.info.status) for r in runs] == [("job-env", "FINISHED")]
        assert len(client.get_metric_history(runs[0].info.run_id, "pretrain_loss")) == 5


TOY = ("experiment=toy", "toy.seeds=[0]", "toy.shares=[0.02]", "toy.steps=30", "toy.eval_per_chain=16",
       "toy.random_trials=200", "toy.workers=1")


@pytest.mark.slow  # a toy job through launch.py (-m: Hydra echoes the overrides) against the server
def test_a_password_in_the_tracking_uri_shows_nowhere(auth_server, tmp_path, monkeypatch, capsys):
    import mlflow

    from detox.report import ReportConfig, build_report, print_table
    from helpers import launch

    secret_uri = auth_server.replace("http://", f"http://{JOB_USER}:{JOB_PASSWORD}@")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)  # the job has nothing but the URI
    result = launch("-m", *TOY, f"root={tmp_path / 'root'}", f"mlflow.tracking_uri={secret_uri}",
                    "mlflow.experiment=detox-secret", timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert JOB_PASSWORD not in output
    assert f"http://{JOB_USER}:***@" in output  # Hydra's echo of the overrides and launch.py's own lines
    # every file under root (the job's log among them) but Hydra's verbatim copies of the command line
    written = [p for p in (tmp_path / "root").rglob("*") if p.is_file()
               and ".hydra" not in p.parts and p.name != "multirun.yaml"]
    assert any(p.name == "launch.log" for p in written)
    assert [p for p in written if JOB_PASSWORD.encode() in p.read_bytes()] == []

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", JOB_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", JOB_PASSWORD)
    client = mlflow.MlflowClient(auth_server)
    [run] = client.search_runs([client.get_experiment_by_name("detox-secret").experiment_id])
    assert run.info.status == "FINISHED"
    config = (tmp_path / client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    recorded = [config, *run.data.params.values(), *run.data.tags.values()]
    assert f"tracking_uri: http://{JOB_USER}:***@" in config
    assert not [text for text in recorded if JOB_PASSWORD in text]

    # the report (the sweep's callback and detox-report/detox-table) reads the server by the same URI
    report = []
    build_report(ReportConfig(secret_uri, "detox-secret", out=str(tmp_path / "report")), log=report.append)
    print_table(secret_uri, "detox-secret")
    shown = "\n".join(report) + capsys.readouterr().out
    assert "No finished study runs" in shown and f"{JOB_USER}:***@" in shown and JOB_PASSWORD not in shown


def test_redact_hides_every_password_and_keeps_the_rest():
    from detox.core.redact import redact

    assert redact("http://user:pass@host:5000") == "http://user:***@host:5000"
    assert redact("mlflow.tracking_uri=http\\://u\\:pw@h\\:5000") == "mlflow.tracking_uri=http\\://u\\:***@h\\:5000"  # Hydra's
    assert redact("postgresql://u:p%40ss@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"
    assert redact("postgresql+psycopg2://u:a@b@db/mlflow") == "postgresql+psycopg2://u:***@db/mlflow"
    assert redact("postgresql://db/mlflow?user=u&password=pw&sslmode=require") == \
        "postgresql://db/mlflow?user=u&password=***&sslmode=require"
    assert redact("mlflow:\n  tracking_uri: 'https://u:pw@h'\n  experiment: x") == \
        "mlflow:\n  tracking_uri: 'https://u:***@h'\n  experiment: x"
    for plain in ("http://127.0.0.1:5000", "http://host:5000/#/experiments/1", "sqlite:////tmp/mlflow.db",
                  "http://user@host:5000", "root=/tmp/x ratio=10", "http://[::1]:5000/path"):
        assert redact(plain) == plain


def test_mlflow_gets_an_http_uri_without_its_credentials(monkeypatch):
    from detox.core.redact import to_environment

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # restored after the test
    assert to_environment("http://u%40x:p%3Aw@host:5000/prefix") == "http://host:5000/prefix"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("u@x", "p:w")
    for other in ("http://host:5000", "postgresql://u:p@db/mlflow", "sqlite:////tmp/m.db"):
        assert to_environment(other) == other


def test_log_records_and_output_are_redacted(caplog, capsys):
    from detox.core.redact import redact_output

    factory, streams = logging.getLogRecordFactory(), (sys.stdout, sys.stderr)
    try:
        redact_output()
        redact_output()  # once is enough
        with caplog.at_level(logging.INFO):
            logging.getLogger("hydra.test").info("\t#0 : mlflow.tracking_uri=%s ratio=%d", "http://u:pw@h:5000", 10)
            logging.getLogger("hydra.test").info("100% done")  # no args, a stray % sign: left alone
        overrides = ["mlflow.tracking_uri=http\\://u\\:pw@h\\:5000"]  # as Hydra escapes them
        sys.stderr.write(f"Error executing job with overrides: {overrides}\n")  # how Hydra reports a failed job
        print("postgresql://u:pw@db/mlflow", flush=True)
    finally:
        logging.setLogRecordFactory(factory)
        sys.stdout, sys.stderr = streams
    assert caplog.messages == ["\t#0 : mlflow.tracking_uri=http://u:***@h:5000 ratio=10", "100% done"]
    shown = capsys.readouterr()
    assert shown.out == "postgresql://u:***@db/mlflow\n"
    assert shown.err == "Error executing job with overrides: ['mlflow.tracking_uri=http\\\\://u\\\\:***@h\\\\:5000']\n"


def test_a_job_logs_its_config_and_params_without_passwords(smoke_job):
    """The sqlite store: what `track` records passes through redact."""
    import mlflow

    from detox import tracking

    config = "mlflow:\n  tracking_uri: postgresql://u:Db-secret-1@db/mlflow\n  experiment: detox-smoke\n"
    run_id, _ = tracking.track(smoke_job, "key-1", {"data": {"source": "http://u:Src-secret-2@host/x"}}, {"ratio": "0"},
                               config, "redacted", lambda: tracking.Outcome(metrics={"m": 1.0}), log=lambda _: None)
    mlflow.set_tracking_uri(smoke_job.tracking_uri)
    run = mlflow.get_run(run_id)
    logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert logged == config.replace("Db-secret-1", "***")
    assert run.data.params["cfg.data.source"] == "http://u:***@host/x"
