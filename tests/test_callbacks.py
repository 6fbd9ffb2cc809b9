"""The Lightning callbacks of detox/callbacks.py that change how pre-training trains."""

from types import SimpleNamespace

import torch
from olmo.model import OLMo

from detox.callbacks import document_attention_bias, document_mask
from detox.config import ModelConfig
from detox.training.pretrain import olmo_config

EOS = 0


def test_document_bias_lets_a_token_see_only_its_own_document():
    ids = torch.tensor([[5, EOS, 6, 7, EOS, 8]])  # a cut-off document, then two whole ones, each opened by EOS
    allowed = document_attention_bias(ids, EOS)[0, 0] == 0
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [0, 1, 0, 0, 0, 0],
                             [0, 1, 1, 0, 0, 0],
                             [0, 1, 1, 1, 0, 0],
                             [0, 0, 0, 0, 1, 0],
                             [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_with_the_mask_a_document_reads_the_same_after_others_as_alone():
    """What the evaluation sees (EOS, then one document) is what training computes for every document of a
    packed window: the logits of a document after another equal its logits alone (rotary positions are relative)."""
    torch.manual_seed(0)
    model = OLMo(olmo_config(ModelConfig(d_model=16, n_heads=2, n_layers=2), 32, EOS, 1, 16)).eval()
    first, second = [EOS, 3, 4, 5, 6], [EOS, 7, 8, 9]
    window = torch.tensor([first + second])
    alone = model(torch.tensor([second])).logits[0]
    unmasked = model(window).logits[0, len(first):]
    callback = document_mask(EOS)
    callback.on_fit_start(None, SimpleNamespace(model=model))
    callback.on_train_batch_start(None, None, torch.cat([window, window[:, :1]], 1), 0)  # inputs and a target
    masked = model(window).logits[0, len(first):]
    callback.on_train_end(None, None)
    assert torch.allclose(masked, alone, atol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)  # without the mask the first document leaks in
    assert torch.equal(model(window).logits[0, len(first):], unmasked)  # after training: the model's own forward
