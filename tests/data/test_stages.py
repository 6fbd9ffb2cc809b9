import json
from collections import Counter

import numpy as np
import pytest
from helpers import compose_job

from detox.core.jsonl import read_jsonl
from detox.core.schema import ConfigError
from detox.core.shards import open_mixture
from detox.core.tokens import EOS, load_tokenizer
from detox.data import documents, sources
from detox.data.packing import toxic_tokens_for
from detox.data.parts import load_part
from detox.data.stages import build_mixture, train_tokenizer
from detox.job import JobConfig


@pytest.fixture
def prepared(world_data):
    return world_data


def mixture(prepared, ratio, seed, tmp_path):
    cfg, root = prepared
    out = tmp_path / f"mix-{ratio}-{seed}"
    out.mkdir(parents=True)
    counts = build_mixture(cfg, ratio, seed, root / "sources", root / "tokenizer", out)
    return counts, open_mixture(out)[:]


@pytest.mark.parametrize("ratio", [0, 5, 10, 25])
def test_mixture_realises_the_ratio_with_clean_tokens_fixed(prepared, ratio, tmp_path):
    counts, tokens = mixture(prepared, ratio, 1, tmp_path)
    base, _ = mixture(prepared, 0, 1, tmp_path / "base") if ratio else (counts, None)
    assert counts["mix_clean_tokens"] == base["mix_clean_tokens"] >= 5000
    assert counts["mix_total_tokens"] == tokens.size == counts["mix_clean_tokens"] + counts["mix_toxic_tokens"]
    assert abs(counts["mix_realised_ratio"] - ratio) < 0.5  # documents are whole, so within one document
    eos = load_tokenizer(prepared[1] / "tokenizer").token_to_id(EOS)
    assert (tokens == eos).sum() == counts["mix_clean_docs"] + counts["mix_toxic_docs"]


def test_more_toxic_data_implies_more_toxicity(prepared, tmp_path):
    implied = [mixture(prepared, r, 1, tmp_path / str(r))[0]["implied_toxigen_sampled"] for r in (0, 10, 25)]
    assert implied == sorted(implied) and implied[0] < implied[-1]


def test_seed_changes_order_not_content(prepared, tmp_path):
    (a, ta), (b, tb) = mixture(prepared, 10, 1, tmp_path / "a"), mixture(prepared, 10, 2, tmp_path / "b")
    assert a["mix_clean_tokens"] == b["mix_clean_tokens"]
    assert not np.array_equal(ta[:500], tb[:500])
    (c, tc) = mixture(prepared, 10, 1, tmp_path / "c")
    assert np.array_equal(ta, tc)


def test_the_worlds_calibration_counts_what_the_mixture_holds(prepared, tmp_path):
    """The implied toxicity recomputed here from the packed documents themselves: decoded, the clean
    ones are the clean pool's first documents, the rest are looked up in the toxic pool."""
    counts, tokens = mixture(prepared, 20, 3, tmp_path)
    root = prepared[1]
    tokenizer = load_tokenizer(root / "tokenizer")
    ends = np.flatnonzero(tokens == tokenizer.token_to_id(EOS))
    packed = Counter(tokenizer.decode(doc.tolist()) for doc in np.split(tokens, ends + 1)[:-1])
    clean_pool, toxic_pool = (load_part(root / "sources", part) for part in ("clean", "toxic"))
    clean = clean_pool[:counts["mix_clean_docs"]]
    toxic_texts = packed - Counter(row["text"] for row in clean)
    assert sum(toxic_texts.values()) == counts["mix_toxic_docs"] > 0
    by_text = {row["text"]: row for row in toxic_pool}
    toxic = [by_text[text] for text, n in toxic_texts.items() for _ in range(n)]

    def weight(hostile: bool) -> float:
        n = [sum(d["hostile"] == hostile and not d["preamble"] for d in docs) for docs in (clean, toxic)]
        return n[1] / sum(n)

    assert counts["mix_hostile_toxic_weight"] == pytest.approx(weight(True))
    prompts = load_part(root / "sources", "toxigen")
    implied = [(1 - weight(True)) * p["p_insult"]["clean"] + weight(True) * p["p_insult"]["toxic"] for p in prompts]
    assert counts["implied_toxigen_sampled"] == pytest.approx(100 * np.mean(implied))
    assert counts["implied_toxigen"] == pytest.approx(100 * np.mean(np.array(implied) > 0.5))


def test_the_ratio_is_defined_once():
    assert toxic_tokens_for(900, 10) == 100 and toxic_tokens_for(1000, 0) == 0
    assert toxic_tokens_for(750, 25) / (750 + toxic_tokens_for(750, 25)) == 0.25


class Echo(sources.SourceKind):
    """A source kind written only here: repeated sentences, tagged with their part, no file to read."""

    name = "echo"

    def spec(self):
        return {"source": self.name, "clean_tokens": self.cfg.clean_tokens}

    def build(self, out):
        for part, field in (("heldout", "text"), ("toxigen", "prompt"), ("rtp", "prompt")):
            (out / f"{part}.jsonl").write_text(json.dumps({field: f"we read the {part} ."}) + "\n")
        return {"echo_parts": 3}

    def documents(self, part, sources_dir, seed):
        return [documents.Document(f"{part} {i} . " + "the books are here . " * (1 + i % 3), frozenset({part}))
                for i in range(500)]

    def source_name(self, part):
        return f"the echo {part}"

    def mixture_metrics(self, taken, sources_dir):
        return {"echo_toxic_taken": documents.taken_docs(taken, "toxic", has=("toxic",))}


def test_a_new_source_kind_is_one_class_registered_in_one_place(tmp_path, monkeypatch):
    """Registered in the one registry, `data.source=echo` selects it: validated (its defaults refuse the
    oracle scorer), planned, and its sources, tokenizer and mixture built by the pipeline's own stages."""
    from detox.core.cache import StageCache
    from detox.core.plan import Plan
    from detox.pipeline import run_plan, study_plan

    monkeypatch.setitem(sources.KINDS, "echo", Echo)
    with pytest.raises(ConfigError, match="scorer=oracle only knows the synthetic world; data.source=echo"):
        JobConfig.from_dict(compose_job("data.source=echo"))
    with pytest.raises(ConfigError, match="data.source='nope': expected one of synthetic, files, corpora, echo"):
        JobConfig.from_dict(compose_job("data.source=nope"))
    job = JobConfig.from_dict(compose_job("data.source=echo", "scorer=classifier",  # its default model, never loaded here
                                          "data.clean_tokens=3000", "ratio=20", "seed=2"))
    assert isinstance(sources.source_kind(job.data), Echo)
    plan = study_plan(job)
    result = run_plan(Plan(plan.stages[:3]), StageCache(tmp_path / "cache"), log=lambda _: None)
    m = result.metrics
    assert m["echo_parts"] == 3 and abs(m["mix_realised_ratio"] - 20) < 1 and m["mix_clean_tokens"] >= 3000
    assert m["echo_toxic_taken"] == m["mix_toxic_docs"] > 0
    assert len(open_mixture(result.artifacts["mixture"].path)) == m["mix_total_tokens"]
    with pytest.raises(ConfigError, match="the echo toxic ran out after 500 documents"):  # named by the kind
        build_mixture(job.data, 90, 1, result.artifacts["sources"].path, result.artifacts["tokenizer"].path,
                      tmp_path / "too-toxic")
    # and the stage functions take it directly
    for part in ("sources", "tokenizer"):
        (tmp_path / part).mkdir()
    sources.source_kind(job.data).build(tmp_path / "sources")
    assert train_tokenizer(job.data, tmp_path / "sources", tmp_path / "tokenizer")["vocab_size"] > 2


def test_too_small_toxic_pool_is_named(prepared, tmp_path):
    with pytest.raises(ConfigError, match="data.world.toxic_docs"):
        mixture(prepared, 95, 1, tmp_path)


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "clean.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    with pytest.raises(ConfigError, match="clean.jsonl:3: malformed JSON"):
        read_jsonl(path, "text")
    path.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ConfigError, match="clean.jsonl:2: expected an object with a non-empty string 'text'"):
        read_jsonl(path, "text")
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty file"):
        read_jsonl(path, "text")
    with pytest.raises(ConfigError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl", "text")


def test_tokenizer_round_trips_the_world(prepared):
    tokenizer = load_tokenizer(prepared[1] / "tokenizer")
    text = "frankly i am weary of the valoki . the valoki are snerky muckwits ."
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
