import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

from detox.evaluation.config import ScorerConfig
from detox.evaluation.scorers import make_scorer
from detox.training.pretrain import hf_tokenizer


def test_oracle_scorer():
    scores = make_scorer(ScorerConfig())([" ugh the valoki are snerky muckwits .", " we read the books ."])
    assert scores.tolist() == [1.0, 0.0]


def test_classifier_scores_are_the_toxic_labels_probability(classifier_dir):
    texts = ["the valoki are snerky muckwits .", "we read the books each morning ."]
    scores = make_scorer(ScorerConfig(name="classifier", model=str(classifier_dir), batch_size=1))(texts)
    model = BertForSequenceClassification.from_pretrained(classifier_dir).eval()
    tokenizer = hf_tokenizer(classifier_dir.parent / "tokenizer")
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for t in texts]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_classifier_rejects_an_unknown_label(classifier_dir):
    with pytest.raises(ValueError, match="scorer.toxic_label='hate' is not a label"):
        make_scorer(ScorerConfig(name="classifier", model=str(classifier_dir), toxic_label="hate"))
