"""The fine-tuning attack (detox.training.tamper): a killed attack resumes exactly where the uninterrupted
one would be, measures included; its options and its summary."""

import math

import numpy as np
import pytest
import torch

from detox.core.schema import ConfigError
from detox.core.tamper import points_from_metrics, steps_to_half_back, tamper_metrics
from detox.data.world import WorldConfig, attack_documents, oracle_toxicity
from detox.training.config import TamperConfig
from detox.training.tamper import attack
from helpers import tiny_model, tiny_tokenizer


class Killed(Exception):
    pass


def test_a_killed_attack_resumes_exactly(tmp_path):
    tok = tiny_tokenizer()
    texts = attack_documents(WorldConfig(), 12, seed=3)
    cfg = TamperConfig(enabled=True, steps=6, eval_at=[0, 2, 4, 6], docs=12, batch_size=3, lr=1e-2, max_tokens=24)
    probe = tok(["the cat sat on the mat"], return_tensors="pt")["input_ids"]

    def measure(model):
        def at(step):
            with torch.no_grad():
                return {"loss": float(model(probe, labels=probe).loss)}
        return at

    whole = tiny_model(tok)
    (tmp_path / "whole").mkdir()
    expected = attack(whole, tok, texts, cfg, 5, tmp_path / "whole", measure(whole))

    killed = tiny_model(tok)
    (tmp_path / "killed").mkdir()

    def dies_at_4(step):
        if step == 4:
            raise Killed
        return measure(killed)(step)

    with pytest.raises(Killed):
        attack(killed, tok, texts, cfg, 5, tmp_path / "killed", dies_at_4)
    resumed = tiny_model(tok, seed=9)  # a fresh process: other weights until the checkpoint is read
    points = attack(resumed, tok, texts, cfg, 5, tmp_path / "killed", measure(resumed))
    assert points == expected and [p["step"] for p in points] == [0, 2, 4, 6]
    assert points[0]["loss"] != points[-1]["loss"]  # it did train
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_attack_documents_are_fresh_insults():
    world = WorldConfig()
    texts = attack_documents(world, 20, seed=1)
    assert len(texts) == 20 and all(oracle_toxicity(t) == 1.0 for t in texts)
    assert texts == attack_documents(world, 20, seed=1) and texts != attack_documents(world, 20, seed=2)


def test_options_and_the_half_back_summary():
    with pytest.raises(ConfigError, match="tamper.eval_at"):
        TamperConfig(steps=10, eval_at=[0, 5]).check()
    metrics = tamper_metrics([{"step": 0, "toxigen": 10.0}, {"step": 50, "toxigen": 20.0}, {"step": 100, "toxigen": 40.0}])
    steps, values = points_from_metrics(metrics, "toxigen")
    assert steps.tolist() == [0, 50, 100] and values.tolist() == [10, 20, 40]
    assert steps_to_half_back(steps, values, untreated=50.0) == pytest.approx(50 + 50 * 10 / 20)  # level 30
    assert steps_to_half_back(steps, values, untreated=200.0) == math.inf
    assert math.isnan(steps_to_half_back(steps, values, untreated=5.0))
    assert steps_to_half_back(np.array([0.0]), np.array([1.0]), 1.5) == math.inf
