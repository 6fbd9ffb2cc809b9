"""Google's Perspective API as a toxicity scorer (optional: the API is announced to close at the end of 2026).

Request (v1alpha1 `comments:analyze`, POST, JSON, key as the `key` query parameter):
`{"comment": {"text": ...}, "languages": ["en"], "requestedAttributes": {"TOXICITY": {}}, "doNotStore": true}`.
Response: `{"attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.87, "type": "PROBABILITY"},
"spanScores": [...]}}, "languages": [...]}`; the score is `attributeScores.TOXICITY.summaryScore.value`.

The key is read from the environment at each call and kept in no attribute, so it cannot reach a
repr, a log or a pickled scorer; it is removed from every error message (an error from urllib
carries the URL, which holds the key). Requests are spaced to at most `qps` a second; 429, 5xx and
network errors are retried with exponential back-off and jitter (or the server's Retry-After); a 401
or 403, or a 400 about the key (a bad key, a key without the API enabled) fails at once. Any other 400 is
the API rejecting one text (a language it does not support, a text it cannot read): that text is asked
again (REJECTED_RETRIES times), then left without a score (NaN), counted (`perspective_missing`) and left
out of every measure; never scored 0, as a common harness does, and never the end of the job (unless
MAX_REJECTED_IN_A_ROW texts in a row are rejected: then something is wrong with every request).
An empty or blank text scores 0 without a request (the API rejects empty comments).

At scale (`evaluate=paper` is about 26,000 requests a job, some 7 h at 1 QPS), with a `state_dir`
(make_scorer gives `<root>/cache/perspective`):
- one rate limit for every process that shares the folder (parallel jobs of a sweep): see `_SharedRate`;
- a score cache (`scores.sqlite`, WAL mode): a text is asked for once, whichever job or re-run asks
  again; only successful scores are kept, and only a hash of the request, never the text.
`doNotStore` is sent (true by default), else Google may keep the texts (model outputs, /pol/ posts).
A text over the API's limit of 3,000 bytes is cut at a UTF-8 character boundary and counted
(`metrics()["perspective_truncated"]`, and one warning per scorer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock
from tqdm import tqdm

from detox.core.schema import ConfigError
from detox.core.score_cache import ScoreCache

log = logging.getLogger(__name__)

URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
ATTRIBUTE = "TOXICITY"
# "The maximum text size per request is 3000 bytes" (Perspective API reference, "Limits"; a longer text
# fails with "Comment text too long."). The docs explain it with UTF-8's 1 to 4 bytes a character, so
# the limit is applied to the UTF-8 bytes of comment.text (not to the whole JSON body).
MAX_TEXT_BYTES = 3000
TRUNCATED = "perspective_truncated"  # the metric: texts cut to MAX_TEXT_BYTES before they were scored
MISSING = "perspective_missing"  # the metric: texts the API rejected, left without a score
REJECTED_RETRIES = 2  # further tries of a text the API rejected (HTTP 400) before it is left without a score
MAX_REJECTED_IN_A_ROW = 25  # so many texts rejected in a row: every request is wrong, the call fails
CACHE_FILE = "scores.sqlite"
RATE_FILE = "rate"


class PerspectiveError(RuntimeError):
    """The Perspective API refused a request or kept failing; the message never holds the key."""


class Rejected(Exception):
    """The API rejected one text (HTTP 400 not about the key); the message is the API's."""


class PerspectiveScorer:
    """Callable on a list of texts: their Perspective TOXICITY scores in [0, 1] as an np.ndarray."""

    def __init__(self, api_key_env: str = "PERSPECTIVE_API_KEY", url: str = URL, qps: float = 1.0,
                 max_retries: int = 5, timeout: float = 30, backoff: float = 1.0, max_backoff: float = 60.0,
                 languages: Sequence[str] = ("en",), do_not_store: bool = True,
                 state_dir: str | Path | None = None, cache: bool = True):
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise ConfigError(f"perspective url={url!r}, expected an http(s) URL")
        if qps <= 0:
            raise ConfigError(f"perspective qps={qps}, expected a positive rate")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ConfigError(f"perspective max_retries={max_retries}, timeout={timeout}, backoff={backoff}: "
                              f"expected max_retries >= 0, timeout > 0, backoff >= 0")
        self.api_key_env = api_key_env  # the NAME of the variable that holds the key, never the key
        self.url = url
        self.qps = qps  # at most this many requests a second, retries included, over all sharers of state_dir
        self.max_retries = max_retries  # further tries of a request after a 429, a 5xx or a network error
        self.timeout = timeout  # seconds to wait for one response
        self.backoff = backoff  # seconds before the first retry; doubled for each next one, with jitter
        self.max_backoff = max_backoff  # the longest wait between two tries
        self.languages = list(languages)
        self.do_not_store = bool(do_not_store)  # ask Google to delete the text once it is scored
        # Where the shared rate limit and the score cache live; None: a limit of this process alone, no cache
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.cache_path = self.state_dir / CACHE_FILE if self.state_dir is not None and cache else None
        self._rate = _SharedRate(self.state_dir / RATE_FILE) if self.state_dir is not None else _LocalRate()
        self.truncated = 0  # texts cut to MAX_TEXT_BYTES, over every call
        self.requests = 0  # texts scored by the API (retries not counted), over every call
        self.cache_hits = 0  # texts whose score came from the cache, over every call
        self.missing = 0  # texts the API rejected, left without a score, over every call
        self._warned = False

    def __repr__(self) -> str:
        return (f"PerspectiveScorer(api_key_env={self.api_key_env!r}, url={self.url!r}, qps={self.qps}, "
                f"max_retries={self.max_retries}, timeout={self.timeout}, do_not_store={self.do_not_store}, "
                f"state_dir={str(self.state_dir) if self.state_dir else None!r}, cache={self.cache_path is not None})")

    def metrics(self) -> dict[str, float]:
        """What a stage reports of this scorer's work (make_scorer's callers merge it into their metrics)."""
        return {TRUNCATED: float(self.truncated), MISSING: float(self.missing)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"the Perspective scorer needs an API key in the environment variable {self.api_key_env}")
        scores = np.zeros(len(texts), dtype=float)
        cache = ScoreCache(self.cache_path) if self.cache_path is not None else None
        known: dict[str, float] = {}  # this call's scores by cache key: a repeated text is asked for once
        truncated = hits = asked = missing = in_a_row = 0
        try:
            for i, text in enumerate(tqdm(texts, desc="perspective", unit="text", disable=len(texts) < 10)):
                if not text.strip():
                    continue
                sent = truncate_utf8(text, MAX_TEXT_BYTES)
                truncated += sent != text
                digest = self._cache_key(sent)
                score = known.get(digest)
                if score is None and cache is not None:
                    # looked up just before asking, so a score another job stored a moment ago is used
                    score = cache.get(digest)
                    hits += score is not None
                if score is None:
                    asked += 1
                    try:
                        score = self._score_or_reject(sent, key)
                    except Rejected as rejection:
                        missing, in_a_row = missing + 1, in_a_row + 1
                        scores[i] = np.nan  # left out of every measure and counted; not cached: asked again next time
                        log.warning("Perspective rejected text %d (%s): left without a score", i, rejection)
                        if in_a_row >= MAX_REJECTED_IN_A_ROW:
                            raise PerspectiveError(f"Perspective API rejected {in_a_row} texts in a row; last: "
                                                   f"{rejection}") from None
                        continue
                    in_a_row = 0
                    if cache is not None:
                        cache.put(digest, score)  # stored at once: a killed job keeps what it paid for
                known[digest] = scores[i] = score
        finally:
            if cache is not None:
                cache.close()
            self.truncated += truncated
            self.requests += asked
            self.cache_hits += hits
            self.missing += missing
            if self.truncated and not self._warned:
                self._warned = True
                log.warning("Perspective: %d text(s) over the API's limit of %d bytes were cut at a UTF-8 character "
                            "boundary before scoring (reported as %s)", self.truncated, MAX_TEXT_BYTES, TRUNCATED)
        if cache is not None and len(texts) >= 10:
            log.info("Perspective: %d text(s) scored by the API, %d from the cache %s", asked, hits, self.cache_path)
        if missing:
            log.warning("Perspective: %d text(s) rejected by the API are left without a score (reported as %s)",
                        missing, MISSING)
        return scores

    def _score_or_reject(self, text: str, key: str) -> float:
        """The text's score; a text the API rejects is asked again REJECTED_RETRIES times before Rejected."""
        for attempt in range(REJECTED_RETRIES + 1):
            try:
                return self._score(text, key)
            except Rejected:
                if attempt == REJECTED_RETRIES:
                    raise
                time.sleep(self._backoff(attempt))

    def _cache_key(self, text: str) -> str:
        """A hash of what decides the answer: the text as sent, the attribute, the languages and the
        endpoint. doNotStore does not change a score, and is left out; the text itself is never stored."""
        request = {"text": text, "attribute": ATTRIBUTE, "languages": self.languages, "url": self.url}
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    def _score(self, text: str, key: str) -> float:
        body = json.dumps({"comment": {"text": text}, "languages": self.languages,
                           "requestedAttributes": {ATTRIBUTE: {}}, "doNotStore": self.do_not_store}).encode()
        request = urllib.request.Request(f"{self.url}?{urllib.parse.urlencode({'key': key})}", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        failure, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(retry_after, self.max_backoff) if retry_after is not None else self._backoff(attempt - 1)
                log.warning("Perspective API %s; retry %d of %d in %.2f s", failure, attempt, self.max_retries, delay)
                time.sleep(delay)
            self._rate.wait(self.qps)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                body = _error_body(error)
                detail = _redact(_error_message(error, body), key)
                if error.code in (401, 403) or (error.code == 400 and _about_the_key(body)):
                    raise PerspectiveError(f"Perspective API refused the request (HTTP {error.code}): {detail}; "
                                           f"check the key in {self.api_key_env}") from None
                if error.code == 400:
                    raise Rejected(f"HTTP 400: {detail}") from None
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


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` itself if its UTF-8 form fits in `max_bytes`, else its longest prefix that does: the cut
    steps back over continuation bytes (10xxxxxx), so no multi-byte character is ever split."""
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate (from a tokenizer) must not raise here
    if len(data) <= max_bytes:
        return text
    cut = max_bytes
    while cut > 0 and data[cut] & 0xC0 == 0x80:  # data[cut] is the first byte left out
        cut -= 1
    return data[:cut].decode("utf-8", "surrogatepass")


class _LocalRate:
    """At most `qps` requests a second from this scorer alone (no state_dir: nothing to share)."""

    def __init__(self):
        self._next = -float("inf")

    def wait(self, qps: float) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + 1 / qps
        if slot > now:
            time.sleep(slot - now)


class _SharedRate:
    """One rate limit for every process whose scorer uses this file (the parallel jobs of a sweep share
    the job root, so they share `<root>/cache/perspective/rate`).

    The file holds the wall-clock time (time.time(), the same clock in every process) at which the next
    request may go. A process takes the file lock, reads that time, books the slot `max(now, next)`,
    writes `slot + 1/qps` back and lets the lock go; then it sleeps until its slot, outside the lock. So
    every request, retries included, has a slot of its own, slots are at least 1/qps apart whichever
    process booked them, and the requests of all processes together keep to `qps` (a process with a
    lower qps books wider gaps). A missing or unreadable file (the first request, a kill mid-write)
    means "now". The lock is filelock's (fcntl) FileLock, as the stage cache uses; on a file system
    shared by several machines the limit holds across them too, up to their clock skew.
    """

    def __init__(self, path: Path):
        self.path = path  # the lock object is made at each wait, so a scorer holds no lock (it stays picklable)

    def wait(self, qps: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            try:
                booked = float(self.path.read_text())
            except (FileNotFoundError, ValueError):
                booked = 0.0
            now = time.time()
            slot = max(now, booked)
            self.path.write_text(repr(slot + 1 / qps))
        if slot > now:
            time.sleep(slot - now)


def _toxicity(payload: bytes, key: str) -> float:
    try:
        value = json.loads(payload)["attributeScores"][ATTRIBUTE]["summaryScore"]["value"]
    except (ValueError, KeyError, TypeError):
        raise PerspectiveError(f"unexpected Perspective API response: {_redact(payload[:300].decode(errors='replace'), key)}") from None
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PerspectiveError(f"Perspective API returned a TOXICITY score outside [0, 1]: {value!r}")
    return float(value)


def _error_body(error: urllib.error.HTTPError) -> dict:
    """An error response's JSON body ({"error": {"message", "status", "details"}}), or {}."""
    try:
        body = json.loads(error.read())
        return body if isinstance(body, dict) else {}
    except Exception:  # not JSON: the status line says enough
        return {}


def _error_message(error: urllib.error.HTTPError, body: dict) -> str:
    """The API's own message from an error body, or the HTTP reason."""
    message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
    return str(message) if message else str(error.reason)


def _about_the_key(body: dict) -> bool:
    """Whether a 400 is about the API key (Google answers a bad key with 400 INVALID_ARGUMENT, reason
    API_KEY_INVALID, "API key not valid"), not about the text."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    reasons = {d.get("reason") for d in error.get("details") or [] if isinstance(d, dict)}
    return "API_KEY_INVALID" in reasons or "api key" in str(error.get("message", "")).lower()


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
