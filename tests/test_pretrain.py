import dataclasses
import json

import numpy as np
import pytest
import torch

from detox.config import ModelConfig, TrainerConfig
from detox.data import build_mixture
from detox.pretrain import OlmoLM, export_hf, olmo_config, pretrain
from olmo.model import OLMo


@pytest.fixture(scope="module")
def mixture(world_data, tmp_path_factory):
    """A folder with the world's `tokenizer/` and a ratio-10 `mixture/` of 3000 clean tokens."""
    cfg, world = world_data
    root = tmp_path_factory.mktemp("pretrain")
    (root / "mixture").mkdir()
    (root / "tokenizer").symlink_to(world / "tokenizer")
    build_mixture(dataclasses.replace(cfg, clean_tokens=3000), 10, 1, world / "sources", world / "tokenizer",
                  root / "mixture")
    return root


TINY = ModelConfig(d_model=16, n_heads=2, n_layers=2)


def trainer(**changes):
    return TrainerConfig(**{**dict(epochs=2, batch_size=8, checkpoint_every=3, num_threads=1), **changes})


def test_export_gives_identical_logits(tmp_path, mixture):
    torch.manual_seed(0)
    olmo = OLMo(olmo_config(TINY, vocab_size=300, eos_id=0, pad_id=1, seq_len=32)).eval()
    hf = export_hf(olmo, mixture / "tokenizer", tmp_path / "hf").eval()
    tokens = torch.randint(0, 300, (3, 20))
    with torch.no_grad():
        expected, got = olmo(tokens).logits, hf(tokens).logits
    assert expected.std() > 0.01  # a real, non-degenerate comparison
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_learns_and_a_seed_fixes_the_run(tmp_path, mixture):
    runs = [pretrain(TINY, trainer(), 32, 7, mixture / "mixture", mixture / "tokenizer", tmp_path / name)
            for name in ("a", "b")]
    assert runs[0]["pretrain_final_loss"] == runs[1]["pretrain_final_loss"]
    curve = json.loads((tmp_path / "a" / "loss_curve.json").read_text())
    assert curve[-1][1] < curve[0][1] - 1.0  # loss falls well below its starting value
    assert (tmp_path / "a" / "hf" / "config.json").exists() and not (tmp_path / "a" / "checkpoints").exists()


class Kill(Exception):
    pass


def test_killed_run_resumes_from_its_checkpoint(tmp_path, mixture, monkeypatch):
    out = tmp_path / "run"
    original = OlmoLM.training_step

    def dying_step(self, batch, batch_idx):
        if self.global_step == 7:
            raise Kill()
        return original(self, batch, batch_idx)

    monkeypatch.setattr(OlmoLM, "training_step", dying_step)
    with pytest.raises(Kill):
        pretrain(TINY, trainer(), 32, 3, mixture / "mixture", mixture / "tokenizer", out)
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "hf").exists()
    monkeypatch.setattr(OlmoLM, "training_step", original)
    metrics = pretrain(TINY, trainer(), 32, 3, mixture / "mixture", mixture / "tokenizer", out)
    assert metrics["pretrain_resumed_from_step"] == 6  # the last checkpoint before the kill
    curve = json.loads((out / "loss_curve.json").read_text())
    assert curve[0][0] == 7  # training went on from there, not from step 0


def test_nan_loss_stops_with_a_clear_error(tmp_path, mixture):
    with pytest.raises(FloatingPointError, match="pre-training loss is nan"):
        pretrain(TINY, trainer(lr=float("inf")), 32, 1, mixture / "mixture", mixture / "tokenizer", tmp_path / "x")
