"""Real servers for tests, as plain context managers: a PostgreSQL from its binaries and an MLflow
tracking server on it (optionally behind MLflow's basic-auth app), and a fake Perspective API. All bind
127.0.0.1 on a free port and are stopped on exit.

    with postgres() as db_uri, mlflow_server(db_uri, tmp / "artifacts") as tracking_uri:
        ...  # mlflow.set_tracking_uri(tracking_uri) in any process

With CI=true in the environment (what .ci/run sets) a test that needs PostgreSQL fails where it is
missing instead of skipping: `require_postgres`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from pathlib import Path
from typing import Iterator

POSTGRES_BIN = os.environ.get("POSTGRES_BIN", "")  # a folder with initdb and pg_ctl; default: below
DEBIAN_BIN = "/usr/lib/postgresql/*/bin"  # where Debian's packages put them (not on PATH)
POSTGRES_USER = "postgres"  # the system account the server runs as when the tests run as root


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def postgres_binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl from POSTGRES_BIN, else from PATH, else from the newest Debian folder; None
    where PostgreSQL is not installed."""
    version = lambda folder: [int(n) for n in re.findall(r"\d+", folder)]  # noqa: E731
    debian = sorted(glob.glob(DEBIAN_BIN), key=version, reverse=True)
    for folder in [POSTGRES_BIN] if POSTGRES_BIN else [None, *debian]:
        found = [shutil.which(name, path=folder) for name in ("initdb", "pg_ctl")]
        if all(found):
            return found[0], found[1]
    return None


def require_postgres() -> None:
    """Skip the calling test where PostgreSQL's binaries or psycopg2 are missing; with CI=true fail
    instead, so that CI cannot pass without running it."""
    missing = [] if postgres_binaries() else ["PostgreSQL's initdb and pg_ctl (apt-get install postgresql; "
                                              "or POSTGRES_BIN=<folder>)"]
    try:
        import psycopg2  # noqa: F401  (the MLflow server's driver for PostgreSQL)
    except ImportError:
        missing.append("psycopg2 (pip install -e '.[test]')")
    if missing:
        import pytest

        reason = "missing " + " and ".join(missing)
        if in_ci():
            pytest.fail(f"{reason}: CI=true runs the PostgreSQL tests", pytrace=False)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster; yields its SQLAlchemy URI (psycopg2 driver, user postgres, trust
    authentication on 127.0.0.1)."""
    binaries = postgres_binaries()
    if binaries is None:
        raise FileNotFoundError(f"initdb and pg_ctl are neither in POSTGRES_BIN, on PATH nor in {DEBIAN_BIN}")
    initdb, pg_ctl = binaries
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="detox-pg-"))  # its own folder: the server account must own it
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin") or "runuser"
        as_user = [runuser, "-u", POSTGRES_USER, "--"]  # the account Debian's package creates
        shutil.chown(data, POSTGRES_USER)
    port = free_port()

    def run(*command: str) -> None:  # cwd: a folder the server account may enter
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, cwd=data)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:2])} exited with {done.returncode}: {done.stderr[-2000:]}")

    try:
        run(initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(pg_ctl, "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "start",
            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1")
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"  # the driver named: SQLAlchemy's URI
        finally:
            subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "stop"], capture_output=True,
                           cwd=data)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def basic_auth(folder: Path, admin_password: str | None = None) -> dict[str, str]:
    """The environment of an `mlflow server --app-name basic-auth` whose users live in `folder`
    (auth.db) and whose admin user is `admin` with `admin_password` (created on first start)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password or secrets.token_urlsafe(16),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout: float = 120, app_name: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server` on `backend_uri` (behind the app `app_name`, e.g. basic-auth, with `env` added
    to its environment); yields its http URI once /health answers. Without MLflow's job execution (its
    GenAI jobs, which detox never submits): on by default, it starts four Huey consumer processes, each
    importing MLflow, which nearly doubles the server's start-up on 2 cores."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    port = free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         *(["--app-name", app_name] if app_name else [])],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"mlflow server exited with {server.returncode}: {log.read()[-2000:].decode()}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server on {uri} did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)  # the server and its workers: a group of its own (start_new_session)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a loaded machine: its workers may not stop in time
                os.killpg(server.pid, 9)
                server.wait(timeout=30)
        log.close()


KEY = "sk-test-5ecret/key+value"  # has characters that URL-encoding changes
ENV = "DETOX_TEST_PERSPECTIVE_KEY"


class FakePerspective:
    """Answers each request with the next scripted (status, body) or, once the script is spent, a score.

    The score of a text is its length / 100 (at most 1), so the expected values are known in the test. Every
    request is recorded with its arrival time; the server stops answering after `limit` requests.
    """

    def __init__(self, script=(), limit=50):
        self.script = list(script)
        self.requests = []
        self.limit = limit
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                query = parse_qs(urlparse(self.path).query)
                fake.requests.append({"time": time.monotonic(), "path": urlparse(self.path).path, "query": query,
                                      "body": body, "content_type": self.headers["Content-Type"]})
                if len(fake.requests) > fake.limit:
                    status, payload, headers = 500, {"error": {"message": "request limit of the fake"}}, {}
                elif fake.script:
                    status, payload, headers = fake.script.pop(0)
                elif query.get("key") != [KEY]:
                    status, payload, headers = 400, {"error": {"message": f"API key not valid: {query.get('key')}"}}, {}
                else:
                    score = min(1.0, len(body["comment"]["text"]) / 100)
                    status, headers = 200, {}
                    payload = {"attributeScores": {"TOXICITY": {"summaryScore": {"value": score, "type": "PROBABILITY"}}},
                               "languages": ["en"]}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1alpha1/comments:analyze"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
