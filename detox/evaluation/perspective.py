"""Google's Perspective API as a toxicity scorer (optional: the API is announced to close at the end of 2026).

Request (v1alpha1 `comments:analyze`, POST, JSON, key as the `key` query parameter):
`{"comment": {"text": ...}, "languages": ["en"], "requestedAttributes": {"TOXICITY": {}}}`.
Response: `{"attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.87, "type": "PROBABILITY"},
"spanScores": [...]}}, "languages": [...]}`; the score is `attributeScores.TOXICITY.summaryScore.value`.

The key is read from the environment at each call and kept in no attribute, so it cannot reach a
repr, a log or a pickled scorer; it is removed from every error message (an error from urllib
carries the URL, which holds the key). Requests are spaced to at most `qps` a second; 429, 5xx and
network errors are retried with exponential back-off and jitter (or the server's Retry-After); a
400 or 403 (a bad key, a key without the API enabled, an unsupported text) fails at once.
An empty or blank text scores 0 without a request (the API rejects empty comments).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from detox.config import ConfigError

log = logging.getLogger(__name__)

URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"


class PerspectiveError(RuntimeError):
    """The Perspective API refused a request or kept failing; the message never holds the key."""


class PerspectiveScorer:
    """Callable on a list of texts: their Perspective TOXICITY scores in [0, 1] as an np.ndarray."""

    def __init__(self, api_key_env: str = "PERSPECTIVE_API_KEY", url: str = URL, qps: float = 1.0,
                 max_retries: int = 5, timeout: float = 30, backoff: float = 1.0, max_backoff: float = 60.0,
                 languages: Sequence[str] = ("en",)):
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise ConfigError(f"perspective url={url!r}, expected an http(s) URL")
        if qps <= 0:
            raise ConfigError(f"perspective qps={qps}, expected a positive rate")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ConfigError(f"perspective max_retries={max_retries}, timeout={timeout}, backoff={backoff}: "
                              f"expected max_retries >= 0, timeout > 0, backoff >= 0")
        self.api_key_env = api_key_env  # the NAME of the variable that holds the key, never the key
        self.url = url
        self.qps = qps  # at most this many requests a second, retries included
        self.max_retries = max_retries  # further tries of a request after a 429, a 5xx or a network error
        self.timeout = timeout  # seconds to wait for one response
        self.backoff = backoff  # seconds before the first retry; doubled for each next one, with jitter
        self.max_backoff = max_backoff  # the longest wait between two tries
        self.languages = list(languages)
        self._last_request = -float("inf")

    def __repr__(self) -> str:
        return (f"PerspectiveScorer(api_key_env={self.api_key_env!r}, url={self.url!r}, qps={self.qps}, "
                f"max_retries={self.max_retries}, timeout={self.timeout})")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"the Perspective scorer needs an API key in the environment variable {self.api_key_env}")
        scores = np.zeros(len(texts), dtype=float)
        for i, text in enumerate(tqdm(texts, desc="perspective", unit="text", disable=len(texts) < 10)):
            if text.strip():
                scores[i] = self._score(text, key)
        return scores

    def _score(self, text: str, key: str) -> float:
        body = json.dumps({"comment": {"text": text}, "languages": self.languages,
                           "requestedAttributes": {"TOXICITY": {}}}).encode()
        request = urllib.request.Request(f"{self.url}?{urllib.parse.urlencode({'key': key})}", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        failure, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(retry_after, self.max_backoff) if retry_after is not None else self._backoff(attempt - 1)
                log.warning("Perspective API %s; retry %d of %d in %.2f s", failure, attempt, self.max_retries, delay)
                time.sleep(delay)
            self._wait_for_slot()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                detail = _redact(_error_message(error), key)
                if error.code in (400, 401, 403):
                    raise PerspectiveError(f"Perspective API refused the request (HTTP {error.code}): {detail}; "
                                           f"check the key in {self.api_key_env}") from None
                if error.code != 429 and error.code < 500:
                    raise PerspectiveError(f"Perspective API error (HTTP {error.code}): {detail}") from None
                failure, retry_after = f"HTTP {error.code}: {detail}", _retry_after(error)
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                failure, retry_after = _redact(f"{type(error).__name__}: {getattr(error, 'reason', error)}", key), None
                continue
            except Exception as error:  # anything else urllib raises may quote the URL, and so the key
                raise PerspectiveError(_redact(f"Perspective request failed: {type(error).__name__}: {error}", key)) \
                    from None
            return _toxicity(payload, key)
        raise PerspectiveError(f"Perspective API failed {self.max_retries + 1} times; last: {failure}")

    def _backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter: uniform in [d/2, d], d = backoff * 2**attempt (capped)."""
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        return delay * (0.5 + 0.5 * random.random())

    def _wait_for_slot(self) -> None:
        wait = self._last_request + 1 / self.qps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()


def _toxicity(payload: bytes, key: str) -> float:
    try:
        value = json.loads(payload)["attributeScores"]["TOXICITY"]["summaryScore"]["value"]
    except (ValueError, KeyError, TypeError):
        raise PerspectiveError(f"unexpected Perspective API response: {_redact(payload[:300].decode(errors='replace'), key)}") from None
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PerspectiveError(f"Perspective API returned a TOXICITY score outside [0, 1]: {value!r}")
    return float(value)


def _error_message(error: urllib.error.HTTPError) -> str:
    """The API's own message from an error body ({"error": {"message": ...}}), or the HTTP reason."""
    try:
        return json.loads(error.read())["error"]["message"]
    except Exception:  # not JSON, or another shape: the status line says enough
        return str(error.reason)


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to the back-off
        return None


def _redact(text: str, key: str) -> str:
    for form in {key, urllib.parse.quote(key, safe=""), urllib.parse.quote_plus(key)}:
        text = text.replace(form, "[REDACTED]")
    return text
