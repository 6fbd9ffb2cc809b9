import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from detox.config import ScorerConfig
from detox.training.pretrain import hf_tokenizer
from detox.evaluation.scorers import make_scorer


@pytest.fixture(scope="module")
def classifier_dir(world_data, tmp_path_factory):
    """A tiny, randomly initialised toxicity classifier saved locally, as a real one would be."""
    root = tmp_path_factory.mktemp("classifier")
    (root / "tokenizer").symlink_to(world_data[1] / "tokenizer")
    tokenizer = hf_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        pad_token_id=tokenizer.pad_token_id, id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1}))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


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
