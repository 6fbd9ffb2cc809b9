import numpy as np
import pytest

from detox.core.schema import ConfigError
from detox.data.annotate import (
    SCORED_TOXIC,
    Annotation,
    annotate,
    eval_prefix,
    scored_documents,
)


@pytest.mark.parametrize("score, expected", [
    (0.0, "toxicity: 0.0\nthe cat sat"),
    (0.04, "toxicity: 0.0\nthe cat sat"),
    (0.25, "toxicity: 0.2\nthe cat sat"),  # Python rounds the exact binary 0.25 half to even
    (0.26, "toxicity: 0.3\nthe cat sat"),
    (0.96, "toxicity: 1.0\nthe cat sat"),
    (1.0, "toxicity: 1.0\nthe cat sat"),
])
def test_meda_writes_the_score_on_the_first_line(score, expected):
    assert annotate("the cat sat", score, "meda") == expected


@pytest.mark.parametrize("score, expected", [
    (0.0, "This text is not toxic.\nthe cat sat"),
    (0.2499, "This text is not toxic.\nthe cat sat"),
    (0.25, "This text is slightly toxic.\nthe cat sat"),
    (0.4999, "This text is slightly toxic.\nthe cat sat"),
    (0.5, "This text is toxic.\nthe cat sat"),
    (0.7499, "This text is toxic.\nthe cat sat"),
    (0.75, "This text is very toxic.\nthe cat sat"),
    (1.0, "This text is very toxic.\nthe cat sat"),
])
def test_inst_bands_at_their_edges(score, expected):
    assert annotate("the cat sat", score, "inst") == expected


def test_eval_prefix_is_the_non_toxic_annotation():
    assert eval_prefix("meda") == "toxicity: 0.0\n"
    assert eval_prefix("inst") == "This text is not toxic.\n"


def test_scored_documents_ask_the_scorer_for_every_document_in_batches():
    from detox.data.documents import Document

    calls = []

    def scorer(texts):
        calls.append(list(texts))
        return np.array([0.9 if "rude" in t else 0.1 for t in texts])

    docs = iter(["a rude goblin", Document("a /pol/ post", toxicity=0.7), "a lovely day", "rude again"])
    out = list(scored_documents(docs, scorer, batch_size=2))
    # the post's own (Perspective) score is another scorer's scale: the job's scorer scores it too
    assert calls == [["a rude goblin", "a /pol/ post"], ["a lovely day", "rude again"]]
    assert [(doc.text, score) for doc, score in out] == [("a rude goblin", 0.9), ("a /pol/ post", 0.1),
                                                         ("a lovely day", 0.1), ("rude again", 0.9)]
    stream = scored_documents(iter(["rude"] * 10), scorer, batch_size=3)
    next(stream)
    assert len(calls) == 3  # lazy: one batch read so far


def test_annotation_transforms_a_document_stream_before_packing(tmp_path):
    """As the mixture stage uses it: the kind's documents (texts or tagged Documents) annotated on their
    way into the packer, tags kept, the shares counted over the documents the mixture took."""
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers

    from detox.core.shards import ShardedTokens
    from detox.core.tokens import EOS
    from detox.data.packing import pack_mixture
    from detox.data.documents import Document

    annotation = Annotation(lambda texts: np.array([0.9 if "rude" in t else 0.1 for t in texts]), "meda", 2, 0.5)
    docs = annotation("toxic", [Document("a rude goblin", frozenset({"hostile"})), "a lovely day",
                                Document("a lovely post", toxicity=0.6)])  # the job's scorer, not the corpus's
    assert list(docs) == list(docs) == [  # re-iterable: a repeat re-reads
        Document("toxicity: 0.9\na rude goblin", frozenset({"hostile", SCORED_TOXIC}), 0.9),
        Document("toxicity: 0.1\na lovely day", frozenset(), 0.1),
        Document("toxicity: 0.1\na lovely post", frozenset(), 0.1)]
    words = ["toxicity:", "0.1", "0.9", "a", "rude", "goblin", "lovely", "day", "clean"]
    tokenizer = Tokenizer(models.WordLevel({EOS: 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    clean = ["a lovely day"] * 3 + ["a rude clean goblin"] * 3
    taken = Counter()
    counts = pack_mixture(annotation("clean", clean), annotation("toxic", ["a rude goblin"] * 9), tokenizer, 20, 20, 1,
                          tmp_path / "mix", taken=taken)
    assert counts["mix_clean_docs"] == 4 and ShardedTokens(tmp_path / "mix").window(0, 2).tolist() in ([2, 3], [2, 4])
    assert annotation.metrics(taken) == {"annotated_clean_toxic_share": 1 / 4, "annotated_toxic_toxic_share": 1.0}
    with pytest.raises(ConfigError, match="batch_size=0"):
        Annotation(lambda t: np.zeros(len(t)), "meda", 0, 0.5)


def test_bad_input_names_the_culprit():
    with pytest.raises(ConfigError, match="'tags' is unknown"):
        annotate("x", 0.1, "tags")
    with pytest.raises(ConfigError, match="'tags' is unknown"):
        Annotation(lambda t: np.zeros(len(t)), "tags", 4, 0.5)
    with pytest.raises(ConfigError, match="batch_size=0"):
        scored_documents([], lambda t: np.zeros(len(t)), 0)  # refused before any document is read
    with pytest.raises(ValueError, match="1.5 is not in"):
        annotate("x", 1.5, "meda")
    with pytest.raises(ValueError, match="document 2 the score 1.5"):
        list(scored_documents("abc", lambda t: np.array([0.1] * (len(t) - 1) + [1.5]), 3))
    with pytest.raises(ValueError, match="nan is not in"):  # a missing score (NaN) passes; an annotation needs one
        list(Annotation(lambda t: np.full(len(t), np.nan), "meda", 2, 0.5)("clean", ["x"]))


def test_cached_scorer_scores_each_text_once_across_calls_and_processes(tmp_path):
    """The bulk scorer's cache (MEDA/INST annotation, SFT's filter): a text scored once is never asked
    for again, by this scorer or another one with the same identity (another job on the root)."""
    from detox.core.score_cache import CachedScorer

    asked = []

    def scorer(texts):
        asked.extend(texts)
        return np.array([0.9 if "rude" in t else 0.1 for t in texts])

    path = tmp_path / "scores.sqlite"
    first = CachedScorer(scorer, {"model": "m"}, path)
    assert first(["rude", "kind", "rude"]).tolist() == [0.9, 0.1, 0.9] and asked == ["rude", "kind"]
    again = CachedScorer(scorer, {"model": "m"}, path)  # e.g. the next mixture's job
    assert again(["kind", "new rude", "rude"]).tolist() == [0.1, 0.9, 0.9] and asked == ["rude", "kind", "new rude"]
    other = CachedScorer(scorer, {"model": "other"}, path)  # another scorer's scores are its own
    other(["kind"])
    assert asked[-1] == "kind" and "kind" not in path.read_bytes().decode(errors="ignore")  # hashes only
    with pytest.raises(ValueError, match="outside"):
        CachedScorer(lambda t: np.full(len(t), np.nan), {"model": "bad"}, path)(["x"])
    assert CachedScorer(lambda t: np.full(len(t), 0.5), {"model": "bad"}, path)(["x"]).tolist() == [0.5]  # NaN not kept
