import numpy as np
import pytest

from detox.config import ConfigError
from detox.core.jsonl import read_jsonl
from detox.core.tokens import EOS, load_tokenizer
from detox.data import build_mixture


@pytest.fixture
def prepared(world_data):
    return world_data


def mixture(prepared, ratio, seed, tmp_path):
    cfg, root = prepared
    out = tmp_path / f"mix-{ratio}-{seed}"
    out.mkdir(parents=True)
    counts = build_mixture(cfg, ratio, seed, root / "sources", root / "tokenizer", out)
    return counts, np.load(out / "train.npy")


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
