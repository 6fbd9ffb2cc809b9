"""The Perspective scorer against a local fake server on 127.0.0.1."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from detox.config import ConfigError
from detox.evaluation.perspective import PerspectiveError, PerspectiveScorer

KEY = "sk-test-5ecret/key+value"  # has characters that URL-encoding changes
ENV = "DETOX_TEST_PERSPECTIVE_KEY"


class FakePerspective:
    """Answers each request with the next scripted (status, body) or, once the script is spent, a score.

    The score of a text is its length / 100, so the expected values are known in the test. Every
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
                    score = len(body["comment"]["text"]) / 100
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


def scorer(url, **kwargs):
    kwargs = {"api_key_env": ENV, "qps": 1000.0, "backoff": 0.01, "timeout": 5, **kwargs}
    return PerspectiveScorer(url=url, **kwargs)


def test_request_body_key_and_scores(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    texts = ["short", "a somewhat longer text", "", "x" * 42]
    with FakePerspective() as fake:
        scores = scorer(fake.url)(texts)
    np.testing.assert_allclose(scores, [len(t) / 100 for t in texts])  # the empty text scores 0 unsent
    assert len(fake.requests) == 3
    first = fake.requests[0]
    assert first["path"] == "/v1alpha1/comments:analyze"
    assert first["query"] == {"key": [KEY]}
    assert first["content_type"] == "application/json"
    assert first["body"] == {"comment": {"text": "short"}, "languages": ["en"], "requestedAttributes": {"TOXICITY": {}}}


def test_rate_limit_spaces_requests(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    qps = 20.0
    with FakePerspective() as fake:
        scorer(fake.url, qps=qps)(["one", "two", "three", "four", "five"])
    gaps = np.diff([r["time"] for r in fake.requests])
    assert len(gaps) == 4
    assert gaps.min() >= 0.9 / qps  # server-side arrival times: a little slack for the network stack


def test_retries_after_429_and_503(monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    busy = (429, {"error": {"message": "quota exceeded"}}, {"Retry-After": "0.05"})
    down = (503, {"error": {"message": "backend unavailable"}}, {})
    with FakePerspective(script=[busy, down]) as fake, caplog.at_level(logging.WARNING):
        scores = scorer(fake.url, backoff=0.1)(["hello"])
    assert scores.tolist() == [0.05]
    assert len(fake.requests) == 3
    gaps = np.diff([r["time"] for r in fake.requests])
    assert gaps[0] >= 0.045  # the server's Retry-After
    assert gaps[1] >= 0.045  # the back-off: uniform in [backoff / 2, backoff] before the first back-off retry
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text


def test_gives_up_after_max_retries(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    down = (503, {"error": {"message": "backend unavailable"}}, {})
    with FakePerspective(script=[down] * 3) as fake:
        with pytest.raises(PerspectiveError, match="failed 3 times; last: HTTP 503: backend unavailable"):
            scorer(fake.url, max_retries=2)(["hello"])
    assert len(fake.requests) == 3


def test_bad_key_is_a_clear_error_without_the_key(monkeypatch, caplog):
    bad_key = "wrong-key-123456"
    monkeypatch.setenv(ENV, bad_key)
    with FakePerspective() as fake, caplog.at_level(logging.DEBUG):
        with pytest.raises(PerspectiveError) as error:
            scorer(fake.url)(["hello"])
    message = str(error.value)
    assert "HTTP 400" in message and ENV in message and "API key not valid" in message
    assert bad_key not in message and "[REDACTED]" in message  # the fake echoes the key back; it is removed
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no urllib error (with the URL) shown
    assert len(fake.requests) == 1  # a bad key is not retried
    assert bad_key not in caplog.text


def test_key_never_in_logs_repr_or_errors(monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    down = (500, {"error": {"message": f"internal error for key {KEY}"}}, {})
    with FakePerspective(script=[down, down]) as fake, caplog.at_level(logging.DEBUG):
        s = scorer(fake.url, max_retries=1)
        with pytest.raises(PerspectiveError) as error:
            s(["hello"])
    assert KEY not in caplog.text and "[REDACTED]" in caplog.text
    assert KEY not in str(error.value)
    assert KEY not in repr(s) and KEY not in str(vars(s))


def test_unreachable_server_error_hides_the_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    with FakePerspective() as fake:
        url = fake.url
    # the server is closed now: connection refused, retried, then a clear error
    with pytest.raises(PerspectiveError, match="failed 2 times") as error:
        scorer(url, max_retries=1)(["hello"])
    assert KEY not in str(error.value)


def test_missing_key_and_bad_settings():
    with pytest.raises(ConfigError, match="DETOX_UNSET_KEY_VARIABLE"):
        PerspectiveScorer(api_key_env="DETOX_UNSET_KEY_VARIABLE")(["hello"])
    with pytest.raises(ConfigError, match="qps"):
        PerspectiveScorer(qps=0)
    with pytest.raises(ConfigError, match="url"):
        PerspectiveScorer(url="file:///etc/passwd")
