import numpy as np
import pytest

from detox.data.annotate import SCORED_TOXIC, Annotation, annotate, annotate_documents, eval_prefix
from detox.config import ConfigError


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


def test_annotate_documents_scores_in_batches_and_keeps_fields():
    calls = []

    def scorer(texts):
        calls.append(list(texts))
        return np.array([0.9 if "rude" in t else 0.1 for t in texts])

    rows = [{"text": "a rude goblin", "id": 1}, {"text": "a lovely day", "id": 2}, {"text": "rude again", "id": 3}]
    out = list(annotate_documents(iter(rows), scorer, "inst", batch_size=2))
    assert calls == [["a rude goblin", "a lovely day"], ["rude again"]]
    assert out == [
        {"text": "This text is very toxic.\na rude goblin", "id": 1, "toxicity": 0.9},
        {"text": "This text is not toxic.\na lovely day", "id": 2, "toxicity": 0.1},
        {"text": "This text is very toxic.\nrude again", "id": 3, "toxicity": 0.9},
    ]


def test_annotation_transforms_a_document_stream_before_packing(tmp_path):
    """As the mixture stage uses it: the kind's documents (texts or tagged Documents) annotated on their
    way into the packer, tags kept, the shares counted over the documents the mixture took."""
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers

    from detox.core.shards import ShardedTokens
    from detox.core.tokens import EOS
    from detox.data.packing import pack_mixture
    from detox.data.sources import Document

    annotation = Annotation(lambda texts: np.array([0.9 if "rude" in t else 0.1 for t in texts]), "meda", 2, 0.5)
    docs = annotation("toxic", [Document("a rude goblin", frozenset({"hostile"})), "a lovely day"])
    assert list(docs) == list(docs) == [Document("toxicity: 0.9\na rude goblin", frozenset({"hostile", SCORED_TOXIC})),
                                        Document("toxicity: 0.1\na lovely day")]  # re-iterable: a repeat re-reads
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
        annotate_documents([], lambda t: np.zeros(len(t)), "tags", 4)  # refused before any row is read
    with pytest.raises(ValueError, match="1.5 is not in"):
        annotate("x", 1.5, "meda")
    with pytest.raises(ValueError, match="document 2 the score nan"):
        list(annotate_documents([{"text": t} for t in "abc"], lambda t: np.array([0.1] * (len(t) - 1) + [np.nan]),
                                "meda", 3))
