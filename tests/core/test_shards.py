"""Packing a mixture into token shards, checked against counts and orders computed here independently."""

import json
import logging

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from detox.core.schema import ConfigError
from detox.core.shards import ShardedTokens
from detox.core.tokens import EOS, olmo_tokenizer
from detox.data.packing import pack_mixture, token_dtype

WORDS = [f"w{i}" for i in range(40)]


def word_tokenizer(extra_words: int = 0) -> tuple[Tokenizer, dict[str, int]]:
    """A whitespace word-level tokenizer: the test knows every id."""
    vocab = {EOS: 0, "[UNK]": 1, "clean": 2, "toxic": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    vocab.update({f"x{i}": 44 + i for i in range(extra_words)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer, vocab


def documents(kind: str, count: int, seed: int) -> list[str]:
    """Documents of 1 + 2..9 words, each starting with its kind so the test can tell them apart."""
    rng = np.random.default_rng(seed)
    return [" ".join([kind, *rng.choice(WORDS, size=rng.integers(2, 10))]) for _ in range(count)]


CLEAN, TOXIC = documents("clean", 400, 0), documents("toxic", 300, 1)


def read_documents(folder, vocab) -> list[list[str]]:
    """The packed documents as word lists, from the raw shard files in index order."""
    index = json.loads((folder / "index.json").read_text())
    tokens = np.concatenate([np.fromfile(folder / s["file"], dtype=index["dtype"]) for s in index["shards"]])
    words = {i: w for w, i in vocab.items()}
    docs, current = [], []
    for token in tokens.tolist():
        if token == vocab[EOS]:
            docs.append(current)
            current = []
        else:
            current.append(words[token])
    assert current == []  # the mixture ends with a whole document
    return docs


def test_mixture_against_a_reference(tmp_path):
    tokenizer, vocab = word_tokenizer()
    ratio, clean_tokens = 20, 900
    counts = pack_mixture(CLEAN, TOXIC, tokenizer, ratio, clean_tokens, seed=3, out=tmp_path / "mix",
                          shard_tokens=97, batch_size=16)
    docs = read_documents(tmp_path / "mix", vocab)
    clean = [d for d in docs if d[0] == "clean"]
    toxic = [d for d in docs if d[0] == "toxic"]
    # clean: the first documents, in order, until the budget is reached (each + its EOS)
    lengths = np.cumsum([len(d.split()) + 1 for d in CLEAN])
    taken = int(np.searchsorted(lengths, clean_tokens)) + 1
    assert [" ".join(d) for d in clean] == CLEAN[:taken]
    realised_clean = int(lengths[taken - 1])
    # toxic: whole distinct documents of the source, just reaching C_realised * p / (100 - p)
    target = round(realised_clean * ratio / (100 - ratio))
    toxic_tokens = sum(len(d) + 1 for d in toxic)
    assert toxic_tokens >= target > toxic_tokens - (len(toxic[-1]) + 1)
    assert len({" ".join(d) for d in toxic}) == len(toxic) and all(" ".join(d) in TOXIC for d in toxic)
    assert counts == {"mix_clean_tokens": realised_clean, "mix_toxic_tokens": toxic_tokens,
                      "mix_total_tokens": realised_clean + toxic_tokens,
                      "mix_realised_ratio": pytest.approx(100 * toxic_tokens / (realised_clean + toxic_tokens)),
                      "mix_clean_docs": len(clean), "mix_toxic_docs": len(toxic), "mix_toxic_repeats": 0}
    # mixed, not clean then toxic: each half of the mixture holds a fair share of the toxic documents
    is_toxic = np.array([d[0] == "toxic" for d in docs])
    half = len(docs) // 2
    assert 0.3 < is_toxic[:half].sum() / is_toxic.sum() < 0.7
    index = json.loads((tmp_path / "mix" / "index.json").read_text())
    assert index["dtype"] == "uint16" and all(s["tokens"] == 97 for s in index["shards"][:-1])


def test_same_clean_text_for_every_ratio_and_seed(tmp_path):
    tokenizer, vocab = word_tokenizer()
    runs = {}
    for ratio, seed in ((5, 1), (25, 1), (25, 2)):
        out = tmp_path / f"r{ratio}s{seed}"
        pack_mixture(CLEAN, TOXIC, tokenizer, ratio, 600, seed, out, batch_size=7)
        runs[ratio, seed] = read_documents(out, vocab)
    cleans = [[d for d in docs if d[0] == "clean"] for docs in runs.values()]
    assert cleans[0] == cleans[1] == cleans[2]
    toxic_1, toxic_2 = ([" ".join(d) for d in runs[25, s] if d[0] == "toxic"] for s in (1, 2))
    assert set(toxic_1) != set(toxic_2)  # the seed picks the toxic documents
    again = tmp_path / "again"
    pack_mixture(CLEAN, TOXIC, tokenizer, 25, 600, 1, again, batch_size=50)  # batching does not change the result
    assert read_documents(again, vocab) == runs[25, 1]


def test_ratio_zero_never_reads_the_toxic_source(tmp_path):
    tokenizer, _ = word_tokenizer()

    def untouchable():
        raise AssertionError("the toxic source was read")
        yield

    counts = pack_mixture(CLEAN, untouchable(), tokenizer, 0, 300, 1, tmp_path / "mix")
    assert counts["mix_toxic_tokens"] == 0 and counts["mix_realised_ratio"] == 0


def test_short_sources(tmp_path, caplog):
    tokenizer, vocab = word_tokenizer()
    few_toxic = TOXIC[:10]
    with pytest.raises(ConfigError, match="4chan sample ran out after 10 documents.*set on_short='repeat'"):
        pack_mixture(CLEAN, iter(few_toxic), tokenizer, 25, 900, 1, tmp_path / "a", toxic_name="4chan sample")
    # an interrupted packing leaves shards but no index: never taken as complete
    assert not (tmp_path / "a" / "index.json").exists()
    with pytest.raises(ConfigError, match="no index.json"):
        ShardedTokens(tmp_path / "a")
    with pytest.raises(ConfigError, match="C4 ran out after"):
        pack_mixture(CLEAN[:5], TOXIC, tokenizer, 10, 900, 1, tmp_path / "b", clean_name="C4")
    with pytest.raises(ConfigError, match="needs a re-iterable source"):
        pack_mixture(CLEAN, iter(few_toxic), tokenizer, 25, 900, 1, tmp_path / "c", on_short="repeat")
    with caplog.at_level(logging.WARNING):
        counts = pack_mixture(CLEAN, few_toxic, tokenizer, 25, 400, 1, tmp_path / "d", on_short="repeat",
                              max_repeats=10)
    few_tokens = sum(len(d.split()) + 1 for d in few_toxic)
    assert counts["mix_toxic_repeats"] == counts["mix_toxic_docs"] - 10 > 0
    assert counts["mix_toxic_tokens"] > few_tokens and "repeats its documents" in caplog.text
    toxic = [" ".join(d) for d in read_documents(tmp_path / "d", vocab) if d[0] == "toxic"]
    assert sorted(toxic[:10]) == sorted(few_toxic)  # every document once before any repeat
    with pytest.raises(ConfigError, match=r"read 1 extra times"):
        pack_mixture(CLEAN, few_toxic, tokenizer, 50, 400, 1, tmp_path / "e", on_short="repeat", max_repeats=1)


def test_dtype_follows_the_vocabulary(tmp_path):
    tokenizer, vocab = word_tokenizer(extra_words=70_000)
    assert token_dtype(tokenizer) == np.uint32
    with pytest.raises(ConfigError, match=r"70044 ids, more than uint16 holds"):
        token_dtype(tokenizer, "uint16")
    texts = ["clean x69999 w1", "clean x5 x65535"]
    pack_mixture(texts, [], tokenizer, 0, 7, 1, tmp_path / "big")
    tokens = ShardedTokens(tmp_path / "big").window(0, 8)
    expected = [vocab[w] for w in texts[0].split()] + [0] + [vocab[w] for w in texts[1].split()] + [0]
    assert tokens.dtype == np.uint32 and tokens.tolist() == expected and max(expected) > 65535


def test_bad_arguments(tmp_path):
    tokenizer, _ = word_tokenizer()
    with pytest.raises(ConfigError, match="ratio=100"):
        pack_mixture(CLEAN, TOXIC, tokenizer, 100, 100, 1, tmp_path / "x")
    with pytest.raises(ConfigError, match="clean_tokens=0"):
        pack_mixture(CLEAN, TOXIC, tokenizer, 10, 0, 1, tmp_path / "x")
    with pytest.raises(ConfigError, match="on_short='loop'"):
        pack_mixture(CLEAN, TOXIC, tokenizer, 10, 100, 1, tmp_path / "x", on_short="loop")
    no_eos = Tokenizer(models.WordLevel({"[UNK]": 0, "clean": 1}, unk_token="[UNK]"))
    with pytest.raises(ConfigError, match="lacks the end-of-document token"):
        pack_mixture(CLEAN, TOXIC, no_eos, 10, 100, 1, tmp_path / "x")
    pack_mixture(CLEAN, TOXIC, tokenizer, 10, 100, 1, tmp_path / "done")
    with pytest.raises(ConfigError, match="already holds a complete packing"):
        pack_mixture(CLEAN, TOXIC, tokenizer, 10, 100, 1, tmp_path / "done")


def test_sharded_tokens_windows_across_boundaries(tmp_path):
    tokenizer, _ = word_tokenizer()
    pack_mixture(CLEAN, TOXIC, tokenizer, 15, 500, 4, tmp_path / "mix", shard_tokens=64)
    index = json.loads((tmp_path / "mix" / "index.json").read_text())
    reference = np.concatenate([np.fromfile(tmp_path / "mix" / s["file"], dtype=np.uint16) for s in index["shards"]])
    tokens = ShardedTokens(tmp_path / "mix")
    assert len(tokens) == tokens.total_tokens == reference.size == index["total_tokens"]
    assert len(index["shards"]) == -(-reference.size // 64)
    for start, length in ((0, 64), (60, 10), (63, 130), (0, reference.size), (reference.size - 5, 5), (128, 0)):
        np.testing.assert_array_equal(tokens.window(start, length), reference[start:start + length])
    with pytest.raises(IndexError, match="outside"):
        tokens.window(reference.size - 5, 6)
    (tmp_path / "mix" / index["shards"][1]["file"]).write_bytes(b"\0" * 10)
    with pytest.raises(ConfigError, match="tokens-00001.bin: expected 128 bytes"):
        ShardedTokens(tmp_path / "mix")


def test_olmo_tokenizer_from_the_wheel(tmp_path):
    tokenizer = olmo_tokenizer()
    assert tokenizer.get_vocab_size() == 50280 and tokenizer.token_to_id(EOS) == 50279
    assert tokenizer.encode("Hello world").ids == [12092, 1533]  # GPT-NeoX-20B BPE ids
    texts = ["The harbor at dawn.", "Nets and tides, again."]
    counts = pack_mixture(texts, [], tokenizer, 0, 3, 0, tmp_path / "olmo")
    expected = [i for t in texts[:counts["mix_clean_docs"]] for i in tokenizer.encode(t).ids + [50279]]
    assert ShardedTokens(tmp_path / "olmo").window(0, len(expected)).tolist() == expected
    with pytest.raises(ConfigError, match="no such tokenizer.*allenai_gpt-neox-olmo-dolma-v1_5.json"):
        olmo_tokenizer("nope.json")
