"""Real servers for tests, as plain context managers: a PostgreSQL from its binaries and an MLflow
tracking server on it. Both bind 127.0.0.1 on a free port and are stopped on exit.

    with postgres(tmp) as db_uri, mlflow_server(db_uri, tmp / "artifacts") as tracking_uri:
        ...  # mlflow.set_tracking_uri(tracking_uri) in any process
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

POSTGRES_BIN = os.environ.get("POSTGRES_BIN", "")  # a folder with initdb and pg_ctl; default: on PATH
POSTGRES_USER = "postgres"  # the system account the server runs as when the tests run as root


def postgres_binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl, or None where PostgreSQL is not installed."""
    found = [shutil.which(name, path=POSTGRES_BIN or None) for name in ("initdb", "pg_ctl")]
    return (found[0], found[1]) if all(found) else None


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
        raise FileNotFoundError("initdb and pg_ctl are not on PATH (or in POSTGRES_BIN)")
    initdb, pg_ctl = binaries
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="detox-pg-"))  # its own folder: the server account must own it
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        shutil.chown(data, POSTGRES_USER)
    port = free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "start",
                        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"  # the driver named: SQLAlchemy's URI
        finally:
            subprocess.run([*as_user, pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "stop"], capture_output=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout: float = 120) -> Iterator[str]:
    """`mlflow server` on `backend_uri`; yields its http URI once /health answers."""
    port = free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
            server.wait(timeout=30)
        log.close()
