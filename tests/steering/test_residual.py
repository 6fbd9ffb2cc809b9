"""Residual-stream steering (detox.steering.residual): CAA's hooked forward is the forward with the vector
added by hand, ablation leaves no component along the direction at the chosen sites."""

import numpy as np
import pytest
import torch

from detox.core import families
from detox.core.schema import ConfigError
from detox.steering import residual
from helpers import TINY_FAMILIES, tiny_family_model, tiny_model, tiny_tokenizer


def _ids(tok):
    return tok(["the cat sat on the mat", "you are a rude goblin"], return_tensors="pt", padding=True)["input_ids"]


def test_caa_hook_equals_the_vector_added_by_hand():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    vector = torch.randn(model.config.hidden_size)
    with torch.no_grad():
        with residual.adding(model, {1: vector}):
            hooked = model(_ids(tok)).logits
        plain = model(_ids(tok)).logits
        # by hand: block 1's output is its input plus attention and MLP; a bias of `vector` on the MLP's
        # output projection adds it to that output, and nothing else
        mlp = model.model.layers[1].mlp
        biased = torch.nn.Linear(mlp.down_proj.in_features, mlp.down_proj.out_features, bias=True)
        biased.weight.copy_(mlp.down_proj.weight)
        biased.bias.copy_(vector)
        mlp.down_proj = biased
        by_hand = model(_ids(tok)).logits
    assert not torch.allclose(hooked, plain, atol=1e-4)
    torch.testing.assert_close(hooked, by_hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", TINY_FAMILIES[:-1])
def test_ablation_leaves_no_component_at_the_chosen_sites(family):
    tok = tiny_tokenizer()
    model = tiny_family_model(family, tok).eval()
    blocks = families.family_of(model).blocks(model)
    u = torch.nn.functional.normalize(torch.randn(model.config.hidden_size), dim=0)
    seen = {}

    def capture(layer):
        def hook(module, args, output):
            seen[layer] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    with torch.no_grad(), residual.ablating(model, {0: u}):
        handles = [block.register_forward_hook(capture(i)) for i, block in enumerate(blocks)]  # after the ablation's
        model(_ids(tok))
        for handle in handles:
            handle.remove()
    assert (seen[0] @ u).abs().max() < 1e-5  # the chosen site: nothing along u
    assert (seen[1] @ u).abs().max() > 1e-3  # another site keeps its component (later layers write it again)


def test_residual_stage_difference_of_means_and_errors(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    rows = [{"text": t, "label": label} for t, label in
            (("the cat sat", 0), ("a lovely day", 0), ("you rude goblin", 1), ("the goblin is rude", 1))]
    metrics = residual.residual_stage(model, tok, rows, 2, tmp_path)
    acts = residual.residual_activations(model, tok, [r["text"] for r in rows], 3).numpy()
    means = residual.load_diff_means(tmp_path)
    np.testing.assert_allclose(means, acts[2:].mean(0) - acts[:2].mean(0), rtol=1e-4, atol=1e-6)
    assert metrics["residual_layers"] == 2
    vectors = residual.caa_vectors(means, [], 2.0)
    assert sorted(vectors) == [0, 1] and torch.allclose(vectors[1], torch.from_numpy(-2.0 * means[1]))
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        with residual.adding(model, {5: vectors[0]}):
            pass
    with pytest.raises(ConfigError, match="both labels"):
        residual.diff_means(acts, np.zeros(4))
