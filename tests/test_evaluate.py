import numpy as np
import pytest
import torch
from transformers import OlmoConfig, OlmoForCausalLM

from detox.config import EvaluateConfig
from detox.evaluation.evaluate import ce_loss, evaluate
from detox.training.pretrain import hf_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer(world_data):
    tokenizer = hf_tokenizer(world_data[1] / "tokenizer")
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    return model, tokenizer


def test_ce_loss_matches_a_per_document_reference(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = ["the valoki sell the coins .", "we read the books each morning , and they are fine . indeed , ok ."]
    total, count = 0.0, 0
    for text in texts:  # unpadded, one document at a time, summed over tokens
        ids = torch.tensor([tokenizer.encode(tokenizer.eos_token + text + tokenizer.eos_token, add_special_tokens=False)])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        total, count = total + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    assert ce_loss(model, tokenizer, texts, batch_size=2) == pytest.approx(total / count, rel=1e-5)


def test_metrics_follow_their_definitions(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    prompts = {"toxigen": ["i am weary of the valoki ."] * 4, "rtp": ["the quist sell the coins ."] * 3}
    cfg = EvaluateConfig(toxigen_max_new_tokens=4, rtp_samples=5, rtp_max_new_tokens=4, batch_size=2)
    # A scorer that calls every third text toxic, in order: the metrics can be computed by hand.
    calls = []

    def scorer(texts):
        calls.append(len(texts))
        start = sum(calls[:-1])
        return np.array([1.0 if (start + i) % 3 == 0 else 0.0 for i in range(len(texts))])

    m = evaluate(model, tokenizer, prompts, {"clean": ["the valoki sell the coins ."]}, scorer, cfg, 0.5, 0, tmp_path)
    assert calls == [4, 15]
    assert m["toxigen"] == 50.0  # texts 0 and 3 of 4
    rtp = np.array([1.0 if (4 + i) % 3 == 0 else 0.0 for i in range(15)]).reshape(3, 5)
    assert m["rtp_expected_max_toxicity"] == pytest.approx(100 * rtp.max(1).mean())
    assert m["rtp_toxicity_probability"] == pytest.approx(100 * rtp.any(1).mean())
    assert m["rtp_sample_toxicity"] == pytest.approx(100 * rtp.mean())
    assert (tmp_path / "generations.jsonl").read_text().count("\n") == 4 + 3
    assert "insult_probability" not in m and "ce_hostile" not in m  # only where the sources have them


def test_decision_measures_on_the_world(model_and_tokenizer, tmp_path):
    from detox.evaluation.evaluate import insult_probability

    model, tokenizer = model_and_tokenizer
    prompts = {"toxigen": ["i am weary of the valoki , seriously .", "the valoki are here , utterly ."],
               "rtp": ["we read the books ."], "neutral": ["we read the books ."]}
    cfg = EvaluateConfig(toxigen_max_new_tokens=4, rtp_samples=2, rtp_max_new_tokens=4, batch_size=2)
    m = evaluate(model, tokenizer, prompts, {"clean": ["the valoki sell the coins ."], "hostile": ["ugh the valoki ."]},
                 lambda texts: np.zeros(len(texts)), cfg, 0.5, 0, tmp_path)
    assert m["insult_probability"] == pytest.approx(100 * insult_probability(model, tokenizer, prompts["toxigen"], 2).mean())
    assert 0 <= m["well_formed"] <= 100 and 0 < m["decision_mass"] <= 100 and m["ce_hostile"] > 0
