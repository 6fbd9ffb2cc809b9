import math

import numpy as np
import pytest
import torch
from transformers import OlmoConfig, OlmoForCausalLM

from detox.core.geometry import entanglement, random_entanglement_level
from detox.core.schema import ConfigError
from detox.steering.probe_fit import fit_probes
from detox.steering.steer import bake_into_bias, iti_shifts, select_heads, steering

N_LAYERS, N_HEADS, HEAD_DIM = 2, 4, 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = OlmoConfig(vocab_size=24, hidden_size=N_HEADS * HEAD_DIM, intermediate_size=64,
                        num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, initializer_range=0.3,
                        pad_token_id=1, eos_token_id=0)
    return OlmoForCausalLM(config).eval()


@pytest.fixture(scope="module")
def acts_and_probes():
    rng = np.random.default_rng(0)
    labels = np.arange(80) % 2
    acts = rng.standard_normal((80, N_LAYERS, N_HEADS, HEAD_DIM)) + 0.5
    acts[:, 1, 2] += labels[:, None] * 1.5  # a toxicity direction along all dims of head (1, 2)
    acts = acts.astype(np.float32)
    return acts, fit_probes(acts, labels, seed=0)


def test_select_heads_takes_the_best_and_breaks_ties_in_order():
    accuracy = np.array([[0.5, 0.9, 0.7], [0.9, 0.6, 0.9]])
    assert select_heads(accuracy, 4) == [(0, 1), (1, 0), (1, 2), (0, 2)]
    assert select_heads(accuracy, 1) == [(0, 1)]
    for k in (0, 7):
        with pytest.raises(ConfigError, match=f"top_k_heads={k}"):
            select_heads(accuracy, k)


def test_mass_mean_shift_lands_on_the_chosen_heads_and_points_away_from_toxicity(acts_and_probes):
    acts, probes = acts_and_probes
    heads = [(1, 2), (0, 3)]
    shifts = iti_shifts(probes, heads, alpha=4.0)
    assert shifts.shape == (N_LAYERS, N_HEADS * HEAD_DIM)
    blocks = shifts.reshape(N_LAYERS, N_HEADS, HEAD_DIM)
    for layer in range(N_LAYERS):
        for head in range(N_HEADS):
            if (layer, head) in heads:
                expected = -4.0 * probes.sigma[layer, head] * probes.mass_mean[layer, head]
                np.testing.assert_allclose(blocks[layer, head].numpy(), expected, rtol=1e-5)
            else:
                assert not blocks[layer, head].any()
    toxic = probes.mass_mean[1, 2]
    before = acts[:, 1, 2] @ toxic
    after = (acts[:, 1, 2] + blocks[1, 2].numpy()) @ toxic
    np.testing.assert_allclose(before - after, 4.0 * probes.sigma[1, 2], rtol=1e-5)  # 4 sigma lower, for all


def test_probe_and_random_directions_measure_sigma_along_themselves(acts_and_probes):
    acts, probes = acts_and_probes
    train = acts[probes.train_idx, 1, 2].astype(np.float64)
    probe_shift = iti_shifts(probes, [(1, 2)], 2.0, direction="probe", acts=acts).reshape(N_LAYERS, N_HEADS, -1)[1, 2]
    u = probes.probe_direction[1, 2].astype(np.float64)
    np.testing.assert_allclose(probe_shift.numpy(), -2.0 * np.std(train @ u) * u, rtol=1e-5)

    random_shift = iti_shifts(probes, [(1, 2)], 2.0, direction="random", seed=3, acts=acts)[1].reshape(N_HEADS, -1)[2]
    r = -random_shift.numpy().astype(np.float64)
    r_unit = r / np.linalg.norm(r)
    assert np.linalg.norm(r) == pytest.approx(2.0 * np.std(train @ r_unit), rel=1e-5)
    matched = iti_shifts(probes, [(1, 2)], 2.0, direction="random", random_scaling="matched_norm", seed=3)
    mass_mean = iti_shifts(probes, [(1, 2)], 2.0)
    assert matched.norm() == pytest.approx(float(mass_mean.norm()), rel=1e-5)
    np.testing.assert_allclose(matched[1].reshape(N_HEADS, -1)[2].numpy() / matched.norm().item(), -r_unit,
                               rtol=1e-5, atol=1e-6)  # the same seeded direction, another length
    again = iti_shifts(probes, [(1, 2)], 2.0, direction="random", seed=3, acts=acts)
    other = iti_shifts(probes, [(1, 2)], 2.0, direction="random", seed=4, acts=acts)
    assert torch.equal(again[1].reshape(N_HEADS, -1)[2], random_shift) and not torch.equal(again, other)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=-1.0), "alpha=-1.0"),
    (dict(alpha=float("nan")), "alpha=nan"),
    (dict(alpha=1.0, direction="sideways"), "direction='sideways'"),
    (dict(alpha=1.0, direction="probe"), "pass `acts`"),
    (dict(alpha=1.0, direction="random", random_scaling="huge"), "random_scaling='huge'"),
])
def test_bad_iti_settings_are_rejected(acts_and_probes, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        iti_shifts(acts_and_probes[1], [(0, 0)], **kwargs)


def test_bad_head_lists_are_rejected(acts_and_probes):
    probes = acts_and_probes[1]
    with pytest.raises(ConfigError, match="0 heads"):
        iti_shifts(probes, [], 1.0)
    with pytest.raises(ConfigError, match="9 heads"):
        iti_shifts(probes, [(0, 0)] * 9, 1.0)
    with pytest.raises(ConfigError, match="outside"):
        iti_shifts(probes, [(2, 0)], 1.0)


def test_steering_hook_and_baked_bias_give_the_same_logits(model, acts_and_probes):
    shifts = iti_shifts(acts_and_probes[1], [(1, 2), (0, 1)], alpha=6.0)
    ids = torch.tensor([[0, 5, 7, 9, 11, 3], [0, 4, 4, 8, 2, 6]])
    with torch.no_grad():
        plain = model(ids).logits
        with steering(model, shifts):
            steered = model(ids).logits
        after = model(ids).logits
        baked = bake_into_bias(model, shifts)(ids).logits
    torch.testing.assert_close(after, plain, rtol=0, atol=0)  # the hooks are gone
    assert (steered - plain).abs().max() > 1e-2  # the intervention does something
    torch.testing.assert_close(baked, steered, rtol=1e-5, atol=1e-5)
    assert model.model.layers[0].self_attn.o_proj.bias is None  # the original is untouched


def test_steering_adds_the_shift_to_the_o_proj_input_at_every_position(model, acts_and_probes):
    shifts = iti_shifts(acts_and_probes[1], [(1, 2)], alpha=3.0)
    seen = []
    handle = model.model.layers[1].self_attn.o_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    ids = torch.tensor([[0, 5, 7, 9]])
    with torch.no_grad():
        model(ids)
        with steering(model, shifts):
            model(ids)
    handle.remove()
    torch.testing.assert_close(seen[1] - seen[0], shifts[1].expand_as(seen[0]), rtol=1e-5, atol=1e-6)


def test_generation_under_the_kv_cache_equals_a_full_forward_loop(model, acts_and_probes):
    shifts = iti_shifts(acts_and_probes[1], [(1, 2), (0, 1), (1, 0)], alpha=8.0)
    prompt = torch.tensor([[0, 5, 7, 9]])
    with torch.no_grad(), steering(model, shifts):
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                                eos_token_id=None, pad_token_id=1)
        tokens = prompt
        for _ in range(8):  # no cache: the whole sequence again each step, argmax of the last position
            next_token = model(tokens, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    assert torch.equal(cached, tokens)
    with torch.no_grad():
        unsteered = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                                   do_sample=False, eos_token_id=None, pad_token_id=1)
    assert not torch.equal(unsteered, cached)  # the hook did act during generation


def test_steering_rejects_shifts_of_another_shape(model):
    with pytest.raises(ConfigError, match="do not fit the model"):
        with steering(model, torch.zeros(3, 32)):
            pass


def test_entanglement_is_the_largest_absolute_cosine():
    direction = np.array([1.0, 0.0, 0.0])
    others = np.array([[0.0, 2.0, 0.0], [-3.0, 3.0, 0.0], [0.5, 0.0, 0.5]])
    assert entanglement(np.vstack([direction, others]))[0] == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ConfigError, match="zero vectors"):
        entanglement(np.vstack([direction, np.zeros((1, 3))]))


def test_random_entanglement_level_matches_the_exact_expectation():
    # One other vector: E|cos| between random unit vectors in d dims is Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)).
    for dim in (3, 16):
        exact = math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)
        assert random_entanglement_level(dim, 1, trials=20000, seed=0) == pytest.approx(exact, rel=0.02)
    assert exact < random_entanglement_level(16, 10, trials=2000) < 1  # more others: a higher maximum
