"""The Perspective scorer against a local fake server on 127.0.0.1."""

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_job
from servers import ENV, KEY, FakePerspective

from detox.core.schema import ConfigError
from detox.evaluation.config import ScorerConfig
from detox.evaluation.perspective import (
    MAX_TEXT_BYTES,
    MISSING,
    TRUNCATED,
    PerspectiveError,
    PerspectiveScorer,
    truncate_utf8,
)
from detox.evaluation.scorers import make_scorer, scorer_metrics
from detox.job import JobConfig

REPO = Path(__file__).resolve().parents[2]

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
    assert first["body"] == {"comment": {"text": "short"}, "languages": ["en"], "requestedAttributes": {"TOXICITY": {}},
                             "doNotStore": True}


def test_rate_limit_spaces_requests(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    qps = 20.0
    with FakePerspective() as fake:
        scorer(fake.url, qps=qps)(["one", "two", "three", "four", "five"])
    gaps = np.diff([r["time"] for r in fake.requests])
    assert len(gaps) == 4
    # Server-side arrival times, which a loaded machine jitters by a few ms: each gap holds half a slot
    # (no burst) and the four together hold their four slots, a little slack for the network stack.
    assert gaps.min() >= 0.5 / qps and gaps.sum() >= 0.9 * len(gaps) / qps


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


# ------------------------------------------------------------------ at scale: doNotStore, truncation, shared limit, cache

def test_do_not_store_is_sent_in_every_request(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    busy = (503, {"error": {"message": "backend unavailable"}}, {})
    with FakePerspective(script=[busy]) as fake:
        scorer(fake.url)(["one", "two", "three"])  # a retry included
        scorer(fake.url, do_not_store=False)(["four"])
    assert len(fake.requests) == 5
    assert [r["body"]["doNotStore"] for r in fake.requests] == [True, True, True, True, False]


def test_long_text_is_truncated_at_a_utf8_boundary_and_counted(monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    # 1 + 500 x 10 bytes ("a" 1, "€" 3, "😀" 4, "é" 2): 3,000 bytes would end inside an "é"
    long = "b" + "a€😀é" * 500
    assert len(long.encode()) == 5001
    with FakePerspective() as fake, caplog.at_level(logging.WARNING):
        s = scorer(fake.url)
        s([long, "short"])
        s([long])
    sent = fake.requests[0]["body"]["comment"]["text"]
    size = len(sent.encode("utf-8"))  # the server decoded the JSON: a split character would have shown as U+FFFD
    assert size <= MAX_TEXT_BYTES and size == 2999, size  # the "é" that did not fit is left out whole
    assert long.startswith(sent) and "\ufffd" not in sent
    assert fake.requests[1]["body"]["comment"]["text"] == "short"
    expected = {TRUNCATED: 2.0, MISSING: 0.0}
    assert s.truncated == 2 and s.metrics() == expected and scorer_metrics(s) == expected
    warnings = [r for r in caplog.records if "3000 bytes" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once per scorer, however many calls truncate


def test_truncate_utf8_edges():
    assert truncate_utf8("x" * 3000, 3000) == "x" * 3000
    assert truncate_utf8("😀" * 1000, 3000) == "😀" * 750
    assert truncate_utf8("x" + "😀" * 1000, 3000) == "x" + "😀" * 749
    assert truncate_utf8("", 3000) == ""


CHILD = """
import json, sys
from detox.evaluation.perspective import PerspectiveScorer
url, state_dir, tag, n, qps = sys.argv[1:6]
s = PerspectiveScorer(api_key_env={env!r}, url=url, qps=float(qps), state_dir=state_dir, backoff=0.01, timeout=5)
texts = [f"{{tag}} text number {{i}}" for i in range(int(n))] if tag != "same" else json.loads(sys.stdin.readline())
print("ready", flush=True)
sys.stdin.readline()  # "go": both processes start scoring together
scores = s(texts)
print(json.dumps({{"scores": scores.tolist(), "requests": s.requests, "cache_hits": s.cache_hits}}), flush=True)
""".format(env=ENV)


def child(url, state_dir, tag, n=0, qps=1000.0):
    env = {**os.environ, ENV: KEY, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(state_dir), tag, str(n), str(qps)], cwd=REPO,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert KEY not in out and KEY not in err
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_share_one_rate_limit(tmp_path):
    qps, n = 5.0, 6
    state_dir = tmp_path / "cache" / "perspective"
    with FakePerspective() as fake:
        procs = [child(fake.url, state_dir, tag, n, qps) for tag in ("p0", "p1")]
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()[-3000:]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [finish(p) for p in procs]
    times = np.array([r["time"] for r in fake.requests])
    tags = [r["body"]["comment"]["text"].split()[0] for r in fake.requests]
    assert len(times) == 2 * n and [r["requests"] for r in results] == [n, n]
    # any k+1 consecutive requests span at least k / qps seconds (tolerance 0.25 s for a busy machine's
    # scheduling and network stack; two unshared limits would fall short by about 1.1 s here)
    shortfall = max(k / qps - (times[i + k] - times[i]) for k in range(1, len(times)) for i in range(len(times) - k))
    span = times[-1] - times[0]
    busiest = max(np.sum((times >= t) & (times < t + 1.0)) for t in times)
    switches = sum(a != b for a, b in zip(tags, tags[1:]))
    observed = (f"{len(times)} requests from 2 processes at qps={qps} each: span {span:.3f} s, "
                f"overall {(len(times) - 1) / span:.2f} req/s, busiest 1-s window {busiest}, min gap "
                f"{np.diff(times).min():.3f} s, worst shortfall {shortfall:.3f} s, {switches} switches between processes")
    print(observed)
    assert switches >= 2, f"the processes did not run at the same time: {tags}; {observed}"
    assert shortfall <= 0.25, observed
    assert busiest <= qps + 1, observed


def test_second_job_asks_nothing_for_scored_texts(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, KEY)
    texts = ["first text", "a second, longer text", "", "first text", "b" + "a€😀é" * 500]
    state_dir = tmp_path / "cache" / "perspective"
    with FakePerspective() as fake:
        first = scorer(fake.url, state_dir=state_dir)
        scores = first(texts)
        asked_first = len(fake.requests)
        second = child(fake.url, state_dir, "same")  # a new process on the same root: another job of the sweep
        second.stdin.write(json.dumps(texts) + "\n")
        second.stdin.flush()
        assert second.stdout.readline().strip() == "ready"
        second.stdin.write("go\n")
        second.stdin.flush()
        result = finish(second)
        asked_second = len(fake.requests) - asked_first
        again = scorer(fake.url, state_dir=state_dir)(texts)  # and a re-run in this process
        asked_rerun = len(fake.requests) - asked_first - asked_second
    observed = (f"first job: {asked_first} requests for {len(texts)} texts; second job (new process): "
                f"{asked_second} requests, {result['cache_hits']} cache hits; re-run: {asked_rerun} requests")
    print(observed)
    assert asked_first == 3, observed  # the blank text is not sent, the repeated one is asked for once
    assert asked_second == 0 and result["requests"] == 0 and result["cache_hits"] == 3, observed
    assert asked_rerun == 0, observed
    np.testing.assert_allclose(result["scores"], scores)
    np.testing.assert_allclose(again, scores)
    assert (state_dir / "scores.sqlite").is_file()
    for stored in state_dir.iterdir():  # the database, its WAL and lock files: hashes and scores only, no text
        assert b"first text" not in stored.read_bytes(), stored


def test_cache_keeps_only_successes_and_keys_what_changes_the_answer(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, KEY)
    refused = (400, {"error": {"message": "Comment text too long."}}, {})
    down = (503, {"error": {"message": "backend unavailable"}}, {})
    with FakePerspective(script=[refused] * 3 + [down, down]) as fake:
        assert np.isnan(scorer(fake.url, state_dir=tmp_path)(["hello"])).all()  # rejected 3 times: no score
        with pytest.raises(PerspectiveError, match="failed 2 times"):
            scorer(fake.url, state_dir=tmp_path, max_retries=1)(["hello"])
        assert scorer(fake.url, state_dir=tmp_path)(["hello"]).tolist() == [0.05]  # asked again: nothing was kept
        assert len(fake.requests) == 6
        scorer(fake.url, state_dir=tmp_path, do_not_store=False)(["hello"])  # doNotStore does not change a score
        assert len(fake.requests) == 6
        scorer(fake.url, state_dir=tmp_path, languages=("de",))(["hello"])  # the language may: asked
        assert len(fake.requests) == 7
        scorer(fake.url, state_dir=tmp_path, cache=False)(["hello"])  # cache off: asked
        assert len(fake.requests) == 8


def test_make_scorer_places_state_under_the_root(tmp_path):
    s = make_scorer(ScorerConfig(name="perspective", api_key_env=ENV, qps=2.0, do_not_store=False), tmp_path)
    assert s.state_dir == tmp_path.resolve() / "cache" / "perspective"
    assert s.cache_path == s.state_dir / "scores.sqlite" and s.qps == 2.0 and s.do_not_store is False
    assert make_scorer(ScorerConfig(name="perspective", cache=False), tmp_path).cache_path is None
    assert pickle.loads(pickle.dumps(s)).state_dir == s.state_dir  # no lock or connection held between calls
    assert make_scorer(ScorerConfig(name="perspective")).state_dir is None  # no root: no cache, a local limit
    assert scorer_metrics(make_scorer(ScorerConfig())) == {}  # the oracle reports nothing


def test_operational_options_leave_every_stage_key_alone():
    from detox.pipeline import study_plan

    # the scorer's spec is what it was before do_not_store and cache existed, so no stage key moved
    assert set(ScorerConfig().result_spec()) == {"name", "threshold", "model", "toxic_label", "batch_size", "qps",
                                                 "api_key_env"}
    for extra in ([], ["method=sft"], ["redteam.enabled=true"]):  # (MEDA and INST are refused with Perspective)
        base = ["scorer=perspective", *extra]
        keys = study_plan(JobConfig.from_dict(compose_job(*base))).keys()
        off = study_plan(JobConfig.from_dict(compose_job(*base, "scorer.do_not_store=false", "scorer.cache=false")))
        assert off.keys() == keys
        assert study_plan(JobConfig.from_dict(compose_job(*base, "scorer.threshold=0.7"))).keys()["evaluate"] \
            != keys["evaluate"]
