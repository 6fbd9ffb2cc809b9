"""Credentials kept out of what detox prints, logs and records.

A tracking URI may carry a password (`http://user:pass@host:5000`, `postgresql://user:pass@db/mlflow`).
`redact` is what every message, log line, param and logged config shows instead; `to_environment`
hands MLflow an http(s) URI without its credentials (they go to the variables MLflow's client
authenticates with), so that nothing MLflow prints or raises names them either. Plain functions of
the standard library: no MLflow here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import unquote, urlsplit, urlunsplit

HIDDEN = "***"

# scheme://user:password@ : the password runs to the last "@" before the end of the host part (a "/",
# "?", "#", whitespace or a quote), so an unescaped "@" in it is hidden too. Hydra echoes an override's
# colons escaped (`http\://user\:password@host`, doubled inside a list's repr): up to two "\" allowed.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*\\{0,2}://[^:/?#@\s'\"\\]*\\{0,2}):[^/?#\s'\"]*@")
# ...?password=... and the like in a query string (libpq and SQLAlchemy accept a password there)
_QUERY = re.compile(r"([?&](?:password|passwd|pwd|secret|token|access_token|api_key)=)[^&#\s'\"]*", re.IGNORECASE)


def redact(uri: str) -> str:
    """`uri` (or any text holding URIs) with every URI's password replaced by ***; the rest unchanged."""
    return _QUERY.sub(rf"\1{HIDDEN}", _USERINFO.sub(rf"\1:{HIDDEN}@", uri))


def to_environment(uri: str) -> str:
    """The URI to hand MLflow. An http(s) URI with a user and password is returned without them, and
    they are set as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for this process and its
    children (how MLflow's client authenticates to a server); any other URI is returned as it is."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))


class RedactingStream:
    """A text stream that redacts what is written to it; everything else is the wrapped stream's."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def redact_output() -> None:
    """Redact every log record this process makes from now on, and what it writes to stdout and stderr
    (Hydra echoes a sweep's overrides, a tracking URI among them, to the log, and writes a failed
    job's overrides straight to stderr). Idempotent."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacted(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when it is emitted
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    redacted.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted)
