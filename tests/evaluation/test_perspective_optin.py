"""Perspective as an opt-in: a warning naming its closing date; a text the API rejects asked again, then
left without a score and out of every measure (never 0), counted; a key the API refuses still stops at
once; the score cache as a dated archive that another root imports."""

import gzip
import json
import logging

import numpy as np
import pytest
from servers import ENV, KEY, FakePerspective

from detox.evaluation import perspective
from detox.evaluation.config import ScorerConfig
from detox.evaluation.evaluate import TOXICITY, per_group_rates
from detox.evaluation.perspective import MISSING, PerspectiveError, PerspectiveScorer
from detox.evaluation.perspective_archive import ARCHIVE_FORMAT, cache_main
from detox.evaluation.scorers import make_scorer

REJECTED = (400, {"error": {"code": 400, "message": "Attribute TOXICITY does not support request languages: la",
                            "status": "INVALID_ARGUMENT"}}, {})


def scorer(url, **kwargs):
    return PerspectiveScorer(url=url, **{"api_key_env": ENV, "qps": 1000.0, "backoff": 0.01, "timeout": 5, **kwargs})


def test_a_rejected_text_is_asked_again_then_left_out_and_counted_never_scored_0(monkeypatch, caplog):
    monkeypatch.setenv(ENV, KEY)
    with FakePerspective() as fake:
        fake.script = []
        s = scorer(fake.url)
        first = s(["hello"])  # 0.05
        fake.script = [REJECTED] * 3  # the next text is rejected on every try
        with caplog.at_level(logging.WARNING):
            scores = s(["lorem ipsum dolor", "fine text"])
    assert first.tolist() == [0.05] and np.isnan(scores[0]) and scores[1] == pytest.approx(0.09)
    assert len(fake.requests) == 1 + 3 + 1  # asked 3 times (2 retries), then the next text
    assert s.metrics()[MISSING] == 1.0 and "rejected text 0" in caplog.text and "left without a score" in caplog.text
    # every measure leaves a missing score out: the rate is over the scores given, not with a 0 for it
    samples = np.array([[0.9, np.nan], [np.nan, np.nan], [0.1, 0.2]])  # the second prompt has no score at all
    assert TOXICITY["sample_toxicity"](samples, 0.5) == pytest.approx(1 / 3)
    assert TOXICITY["toxicity_probability"](samples, 0.5) == pytest.approx(1 / 2)
    assert TOXICITY["expected_max_toxicity"](samples, 0.5) == pytest.approx((0.9 + 0.2) / 2)
    assert TOXICITY["mean_score"](samples, 0.5) == pytest.approx(0.4)
    assert per_group_rates(["a", "b", "a"], samples, 0.5) == {"a": pytest.approx(100 / 3)}  # b has no score: no rate


def test_a_key_the_api_refuses_and_a_run_of_rejections_still_stop(monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    bad_key = (400, {"error": {"code": 400, "message": "API key expired. Please renew the API key.",
                               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                            "reason": "API_KEY_INVALID"}]}}, {})
    with FakePerspective(script=[bad_key]) as fake:
        with pytest.raises(PerspectiveError, match="refused the request .HTTP 400.: API key expired"):
            scorer(fake.url)(["hello"])
    assert len(fake.requests) == 1
    monkeypatch.setattr(perspective, "REJECTED_RETRIES", 0)
    monkeypatch.setattr(perspective, "MAX_REJECTED_IN_A_ROW", 3)
    with FakePerspective(script=[REJECTED] * 3) as fake:
        with pytest.raises(PerspectiveError, match="rejected 3 texts in a row; last: HTTP 400: Attribute TOXICITY"):
            scorer(fake.url)(["one", "two", "three", "four"])


def test_make_scorer_warns_of_the_closing_date(caplog):
    with caplog.at_level(logging.WARNING):
        make_scorer(ScorerConfig(name="perspective"))
    assert "closes on 31 December 2026" in caplog.text


def test_the_score_cache_exports_as_a_dated_archive_that_another_root_imports(monkeypatch, tmp_path, capsys):
    import datetime

    monkeypatch.setenv(ENV, KEY)
    texts = ["first text", "second one", "a third text here"]
    with FakePerspective() as fake:
        scores = scorer(fake.url, state_dir=tmp_path / "a" / "cache" / "perspective")(texts)
        cache_main(["export", "--root", str(tmp_path / "a"), "--out", str(tmp_path / "archives")])
        day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        archive = tmp_path / "archives" / f"perspective-scores-{day}.jsonl.gz"
        assert f"exported to {archive}" in capsys.readouterr().out
        lines = gzip.decompress(archive.read_bytes()).decode().splitlines()
        header, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
        assert header["format"] == ARCHIVE_FORMAT and header["attribute"] == "TOXICITY"
        assert header["scores"] == 3 and header["first_scored"] == header["last_scored"] == day
        assert sorted(r["score"] for r in rows) == sorted(scores.tolist())
        assert not any(t in "".join(lines) for t in texts)  # hashes and scores, never a text
        cache_main(["import", str(archive), "--root", str(tmp_path / "b")])
        assert "3 Perspective score(s) added" in capsys.readouterr().out
        asked = len(fake.requests)
        again = scorer(fake.url, state_dir=tmp_path / "b" / "cache" / "perspective")(texts)
        assert len(fake.requests) == asked and again.tolist() == scores.tolist()  # nothing asked: imported
    cache_main(["import", str(archive), "--root", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "0 Perspective score(s) added" in out and "3 already there kept" in out
    with pytest.raises(SystemExit):
        cache_main(["export", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert "no Perspective score cache" in capsys.readouterr().err
