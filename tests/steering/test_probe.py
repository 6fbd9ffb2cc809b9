import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.schema import ConfigError
from detox.steering.plots import accuracy_heatmap
from detox.steering.probe import head_activations
from detox.steering.probe_fit import ProbeResult, fit_probes, fit_probes_batched

EOS, PAD = "<|endoftext|>", "<|padding|>"
WORDS = "the valoki sell coins we read books each morning and they are fine hate you all stupid".split()
TEXTS = ["the valoki sell the coins", "we read", "hate", "they are fine and we read the books each morning",
         "you all stupid valoki", "each morning the coins"]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {token: i for i, token in enumerate([EOS, PAD, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=PAD)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = OlmoConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, initializer_range=0.3, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    return OlmoForCausalLM(config).eval()


def manual_layer0_heads(model, ids: list[int]) -> np.ndarray:
    """Layer 0's per-head attention output at the last token, from the weights (float64 numpy)."""
    weights = {name: p.detach().double().numpy() for name, p in model.named_parameters()}
    cfg = model.config
    n_heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    head_dim, positions = hidden // n_heads, np.arange(len(ids))
    h = weights["model.embed_tokens.weight"][ids]
    x = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)  # LayerNorm, no affine
    q, k, v = (x @ weights[f"model.layers.0.self_attn.{n}_proj.weight"].T for n in "qkv")
    q, k, v = (a.reshape(len(ids), n_heads, head_dim) for a in (q, k, v))
    inv_freq = 1.0 / cfg.rope_parameters["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)
    angles = np.concatenate([positions[:, None] * inv_freq] * 2, axis=-1)[:, None, :]

    def rotate(a):  # rotary embedding, halves convention
        half = head_dim // 2
        return a * np.cos(angles) + np.concatenate([-a[..., half:], a[..., :half]], -1) * np.sin(angles)

    q, k = rotate(q), rotate(k)
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(head_dim)
    scores = np.where(np.tril(np.ones((len(ids), len(ids)), bool)), scores, -np.inf)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", attention, v)[-1]  # (n_heads, head_dim)


def test_head_activations_match_a_manual_attention_and_an_unpadded_forward(model, tokenizer):
    acts = head_activations(model, tokenizer, TEXTS, batch_size=4)
    assert acts.shape == (len(TEXTS), 2, 4, 8) and acts.dtype == torch.float32
    for i, text in enumerate(TEXTS):
        ids = tokenizer.encode(EOS + text, add_special_tokens=False)
        assert ids[0] == tokenizer.eos_token_id and len(ids) == len(text.split()) + 1
        np.testing.assert_allclose(acts[i, 0].numpy(), manual_layer0_heads(model, ids), rtol=1e-4, atol=1e-5)
        captured = {}  # every layer's o_proj input of one unpadded text, by a plain hook
        handles = [layer.self_attn.o_proj.register_forward_hook(
            lambda module, args, out, n=n: captured.__setitem__(n, args[0][0, -1])) for n, layer in
            enumerate(model.model.layers)]
        with torch.no_grad():
            model(torch.tensor([ids]))
        for handle in handles:
            handle.remove()
        for layer in range(2):
            # padded batch against one unpadded text: other kernels, float rounding of a few 1e-6
            torch.testing.assert_close(acts[i, layer], captured[layer].reshape(4, 8), rtol=1e-4, atol=1e-5)
    one_at_a_time = head_activations(model, tokenizer, TEXTS, batch_size=1)
    torch.testing.assert_close(acts, one_at_a_time, rtol=1e-4, atol=1e-5)
    assert not any(layer.self_attn.o_proj._forward_pre_hooks for layer in model.model.layers)


def test_head_activations_remove_their_hooks_on_error(model, tokenizer):
    with pytest.raises(TypeError):
        head_activations(model, tokenizer, [None, "the"], batch_size=2)
    assert not any(layer.self_attn.o_proj._forward_pre_hooks for layer in model.model.layers)


def planted(n: int, n_layers: int, n_heads: int, dim: int, seed: int, strength: float = 1.0):
    """Gaussian activations with a label-dependent shift of growing size along a random direction per head."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    direction = rng.standard_normal((n_layers, n_heads, dim))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    size = strength * np.linspace(0, 2.5, n_layers * n_heads).reshape(n_layers, n_heads, 1)
    acts = rng.standard_normal((n, n_layers, n_heads, dim)) * rng.uniform(0.5, 2, dim) + 0.3
    return (acts + labels[:, None, None, None] * size * direction).astype(np.float32), labels


def test_mass_mean_sigma_and_split_follow_their_definitions():
    acts, labels = planted(60, 2, 3, 5, seed=1, strength=2.0)
    result = fit_probes(acts, labels, seed=3, val_fraction=0.25)
    train, val = result.train_idx, result.val_idx
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(60)) and len(val) == 15
    assert np.bincount(labels[val]).tolist() in ([7, 8], [8, 7])  # stratified
    again = fit_probes(acts, labels, seed=3, val_fraction=0.25)
    assert (again.val_idx == val).all()
    for layer in range(2):
        for head in range(3):
            x = acts[train, layer, head].astype(np.float64)
            y = labels[train]
            d = x[y == 1].mean(0) - x[y == 0].mean(0)
            d /= np.sqrt((d ** 2).sum())
            np.testing.assert_allclose(result.mass_mean[layer, head], d, rtol=1e-5, atol=1e-6)
            projection = x @ d
            sigma = np.sqrt(((projection - projection.mean()) ** 2).mean())
            assert result.sigma[layer, head] == pytest.approx(sigma, rel=1e-5)
            w = result.probe_direction[layer, head]
            assert np.linalg.norm(w) == pytest.approx(1, rel=1e-5)
    assert result.accuracy[1, 2] > 0.8  # the strongest planted head is found, and points towards label 1
    assert (result.probe_direction[1, 2] @ result.mass_mean[1, 2]) > 0.5


def test_batched_probes_agree_with_sklearn():
    acts, labels = planted(400, 3, 4, 16, seed=2, strength=1.5)
    reference = fit_probes(acts, labels, seed=0)
    batched = fit_probes_batched(acts, labels, seed=0, heads_per_chunk=5)
    assert (batched.val_idx == reference.val_idx).all()
    assert 100 * np.abs(batched.accuracy - reference.accuracy).mean() <= 1.0
    cosine = (batched.probe_direction * reference.probe_direction).sum(-1)
    assert cosine.min() > 0.99
    np.testing.assert_allclose(batched.sigma, reference.sigma)
    assert reference.accuracy.min() < 0.65 < 0.85 < reference.accuracy.max()  # the data spans easy and hard heads


def test_batched_probes_reach_the_regularised_optimum():
    # The optimum of sum logloss + |w|^2/2 has gradient X'(p - y) + w = 0; check it in float64 directly.
    acts, labels = planted(200, 1, 2, 6, seed=4)
    result = fit_probes_batched(acts, labels, seed=0, tol=1e-9)
    from sklearn.linear_model import LogisticRegression
    for head in range(2):
        x, y = acts[result.train_idx, 0, head].astype(np.float64), labels[result.train_idx]
        exact = LogisticRegression(C=1.0, tol=1e-12, max_iter=10000).fit(x, y)
        w = exact.coef_[0]
        p = 1 / (1 + np.exp(-(x @ w + exact.intercept_[0])))
        assert np.abs(x.T @ (p - y) + w).max() < 1e-6  # the reference is at the optimum
        np.testing.assert_allclose(result.probe_direction[0, head], w / np.linalg.norm(w), atol=1e-6)


def test_batched_probes_do_not_depend_on_how_heads_are_grouped():
    # Heads of very different difficulty finish at different steps and leave the batch; each must still
    # end at its own optimum, the one it reaches when fitted alone.
    acts, labels = planted(300, 2, 6, 10, seed=8, strength=2.0)
    alone = fit_probes_batched(acts, labels, seed=0, heads_per_chunk=1, tol=1e-9)
    together = fit_probes_batched(acts, labels, seed=0, heads_per_chunk=12, tol=1e-9)
    np.testing.assert_allclose(together.probe_direction, alone.probe_direction, atol=1e-6)
    np.testing.assert_array_equal(together.accuracy, alone.accuracy)


def test_probe_result_round_trips_without_pickle(tmp_path):
    acts, labels = planted(40, 2, 2, 3, seed=5)
    result = fit_probes(acts, labels, seed=7)
    result.save(tmp_path / "probes")
    loaded = ProbeResult.load(tmp_path / "probes")
    assert loaded.seed == 7
    for name in ("accuracy", "mass_mean", "probe_direction", "sigma", "train_idx", "val_idx"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
        assert getattr(loaded, name).dtype != object


@pytest.mark.parametrize("fit", [fit_probes, fit_probes_batched])
@pytest.mark.parametrize("labels, message", [
    ([1] * 20, "one class only"),
    ([0, 1] * 3, "at least 4 texts of each label"),
    ([0, 2] * 10, "must be 0 (clean) or 1 (toxic)"),
    ([0, 1] * 9, "one per text"),
])
def test_bad_probe_input_is_rejected_before_fitting(fit, labels, message):
    acts = np.zeros((len(labels) if len(labels) != 18 else 20, 1, 1, 2), np.float32)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit(acts, labels, seed=0)


def test_a_split_too_small_for_the_validation_part_is_rejected():
    with pytest.raises(ConfigError, match="validation split"):
        fit_probes(np.zeros((10, 1, 1, 2), np.float32), [0, 1] * 5, seed=0, val_fraction=0.2)
    with pytest.raises(ConfigError, match="shape"):
        fit_probes(np.zeros((10, 2), np.float32), [0, 1] * 5, seed=0)


def test_accuracy_heatmap_writes_a_png(tmp_path):
    accuracy_heatmap(np.random.default_rng(0).random((3, 4)), tmp_path / "heat.png", "toy")
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="n_layers, n_heads"):
        accuracy_heatmap(np.zeros(3), tmp_path / "bad.png", "bad")


def test_batched_probes_warn_when_the_step_budget_runs_out():
    acts, labels = planted(100, 1, 2, 6, seed=6)
    with pytest.warns(UserWarning, match="not converged in 1 steps"):
        fit_probes_batched(acts, labels, seed=0, max_steps=1, tol=1e-12)
    with pytest.raises(ConfigError, match="heads_per_chunk=0"):
        fit_probes_batched(acts, labels, seed=0, heads_per_chunk=0)


def test_whitening_gives_identity_covariance_and_honest_entanglement():
    from detox.steering.probe import entanglement_map, whiten

    rng = np.random.default_rng(0)
    n, dim = 600, 6
    scales = np.array([30.0, 10.0, 1.0, 1.0, 1.0, 1.0])  # strongly anisotropic heads
    acts = (rng.standard_normal((n, 1, 1, dim)) * scales).astype(np.float32)
    white = whiten(acts)[:, 0, 0]
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(dim), atol=2e-3)  # up to the ridge
    labels = rng.integers(0, 2, n)  # toxicity independent of the feature
    rows = [{"text": "x", "label": int(y), "topic": str(t)} for y, t in zip(labels, rng.integers(0, 3, n))]
    honest, _ = entanglement_map(acts, labels, rows)
    raw_toxic = acts[labels == 1].mean(0) - acts[labels == 0].mean(0)
    raw_topic = acts[[r["topic"] == "0" for r in rows]].mean(0) - acts.mean(0)
    raw = abs((raw_toxic * raw_topic).sum()) / (np.linalg.norm(raw_toxic) * np.linalg.norm(raw_topic))
    assert raw > 0.5 and honest[0, 0] < raw  # noise along the big axes makes raw directions look alike
    # a planted shared direction is found in whitened coordinates too
    shared = rng.standard_normal(dim)
    topics = np.array([int(r["topic"]) for r in rows])
    planted = acts + ((labels + (topics == 0)) * 3.0)[:, None, None, None] * shared / scales
    assert entanglement_map(planted.astype(np.float32), labels, rows)[0][0, 0] > 0.9
