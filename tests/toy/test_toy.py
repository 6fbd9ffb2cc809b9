"""Tests for detox.toy: geometry numerics against independent computations, the generator's
properties, the paper design's world, model and probes, and tiny end-to-end curves of both designs."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detox.core.geometry import entanglement, random_entanglement_level, welch_bound
from detox.core.schema import ConfigError
from detox.toy.config import ToyConfig
from detox.toy.directions import feature_directions, probe_directions
from detox.toy.model import ToyTransformer
from detox.toy.plot import plot_toy_curve
from detox.toy.sweep import run_toy_curve
from detox.toy.table import summary_table
from detox.toy.train import bayes_logp, kl_to_truth, train_toy
from detox.toy.chains import (
    chain_counts,
    feature_sequences,
    make_world,
    sample_sequences,
    training_chains,
)

torch.set_num_threads(1)  # the machine is shared; the tiny models gain nothing from more threads

TINY = dict(shares=[0.05], seeds=[0, 1], steps=30, batch_size=16, warmup_steps=5, eval_per_chain=16,
            random_trials=500, workers=1)
CONF = Path(__file__).parents[2] / "conf/toy"
PAPER = ToyConfig(**yaml.safe_load((CONF / "paper.yaml").read_text()))


# --- geometry -----------------------------------------------------------------------------------


def test_orthonormal_basis_has_zero_entanglement():
    assert np.allclose(entanglement(np.diag([1.0, 2.0, 3.0, 0.5])), 0.0)


def test_hand_computed_three_vectors():
    # cos(a,b) = -3/5, cos(a,c) = 0, cos(b,c) = 16/25; norms 1, 5, 5 must not matter.
    V = np.array([[1.0, 0, 0], [-3, 4, 0], [0, 4, 3]])
    assert np.allclose(entanglement(V), [0.6, 0.64, 0.64])


@pytest.mark.parametrize("n", [3, 4, 5, 8])
def test_evenly_spread_lines_in_plane(n):
    # n lines at angles k·pi/n: neighbours are pi/n apart, so every line's max |cos| is cos(pi/n),
    # which meets the Welch bound only for the equiangular n = 3 frame.
    angles = np.arange(n) * np.pi / n
    ent = entanglement(np.stack([np.cos(angles), np.sin(angles)], 1))
    assert np.allclose(ent, math.cos(math.pi / n))
    assert ent.min() >= welch_bound(n, 2) - 1e-12
    if n == 3:
        assert math.isclose(welch_bound(3, 2), 0.5)
        assert np.allclose(ent, welch_bound(3, 2))


@pytest.mark.parametrize("m", [2, 3, 4, 7])
def test_regular_simplex_meets_welch_bound(m):
    # m+1 centred basis vectors of R^(m+1) span an m-dim space: a regular simplex, |cos| = 1/m.
    E = np.eye(m + 1) - 1.0 / (m + 1)
    _, _, Vt = np.linalg.svd(E)
    V = E @ Vt[:m].T  # coordinates in that m-dim space
    assert np.allclose(entanglement(V), 1.0 / m)
    assert math.isclose(welch_bound(m + 1, m), 1.0 / m)


def test_welch_bound_values():
    assert welch_bound(4, 4) == 0.0 and welch_bound(3, 5) == 0.0
    assert math.isclose(welch_bound(6, 4), math.sqrt(0.1))


def test_random_level_matches_closed_forms():
    # Two random directions: in R^2 |cos| = |cos U(0, 2pi)| has mean 2/pi; in R^3 |cos| ~ U(0, 1).
    assert abs(random_entanglement_level(2, 1, trials=20000) - 2 / math.pi) < 0.01
    assert abs(random_entanglement_level(3, 1, trials=20000) - 0.5) < 0.01
    # An independent prototype: 0.744 for N = 6 in M = 4; it must sit above Welch.
    assert abs(random_entanglement_level(4, 5, trials=20000) - 0.744) < 0.01
    assert random_entanglement_level(4, 5, trials=20000) == random_entanglement_level(4, 5, trials=20000)  # fixed seed


def test_feature_directions_token_centred():
    # z = token offset A[x] + chain vector B[c]; every chain sees the same tokens, so centring per
    # token leaves exactly B[c] - mean(B). Early positions hold garbage that must be ignored.
    rng = np.random.default_rng(0)
    n_chains, S, T, late = 3, 5, 10, 4
    A, B = rng.normal(size=(S, 2)) * 10, rng.normal(size=(n_chains, 2))
    base = rng.integers(S, size=(4, T))
    seqs = np.concatenate([base] * n_chains)
    chains = np.repeat(np.arange(n_chains), len(base))
    z = A[seqs] + B[chains][:, None, :]
    z[:, :late] = 1e6
    V = feature_directions(z, seqs, chains, late)
    assert np.allclose(V, B - B.mean(0))


# --- generator ----------------------------------------------------------------------------------


def test_chain_counts_realise_share_exactly():
    counts = chain_counts(1000, 0.01, 6)
    assert counts.tolist() == [10, 198, 198, 198, 198, 198]
    labels = training_chains(ToyConfig(steps=100, batch_size=64), 0.02, np.random.default_rng(0))
    assert len(labels) == 6400 and np.mean(labels == 0) == 0.02
    assert np.bincount(labels).tolist() == chain_counts(6400, 0.02, 6).tolist()


def test_world_transitions():
    cfg = ToyConfig(minority_overlap=2)
    w = make_world(cfg, np.random.default_rng(3))
    assert np.allclose(w.transition.sum(2), 1.0)
    # Same support for every chain: no single transition identifies the chain (the permutation-chain trap).
    support = w.transition > 0
    assert (support == support[0]).all() and (support.sum(2) == cfg.max_step).all()
    assert len(set(w.groups[0]) & set(w.groups[1])) == 2


def test_sequences_follow_cycle_and_preferences():
    cfg = ToyConfig()
    w = make_world(cfg, np.random.default_rng(1))
    chains = np.repeat(np.arange(cfg.n_chains), 200)
    seqs = sample_sequences(w, chains, cfg.seq_len, np.random.default_rng(2))
    steps = (w.cycle_pos[seqs[:, 1:]] - w.cycle_pos[seqs[:, :-1]]) % cfg.n_states
    assert set(np.unique(steps)) == {1, 2, 3}
    # Each chain spends more of its time in its own group than any other chain does there.
    in_group = np.array([[np.isin(seqs[chains == c], w.groups[g]).mean() for g in range(cfg.n_chains)]
                         for c in range(cfg.n_chains)])
    assert (in_group.argmax(0) == np.arange(cfg.n_chains)).all()


def test_generator_deterministic_for_seed():
    cfg = ToyConfig()

    def draw(seed):
        rng = np.random.default_rng(seed)
        w = make_world(cfg, rng)
        return sample_sequences(w, training_chains(ToyConfig(steps=10), 0.1, rng), cfg.seq_len, rng)

    assert np.array_equal(draw(5), draw(5))
    assert not np.array_equal(draw(5), draw(6))


def test_kl_references():
    cfg = ToyConfig()
    w = make_world(cfg, np.random.default_rng(0))
    chains = np.repeat(np.arange(cfg.n_chains), 100)
    seqs = sample_sequences(w, chains, cfg.seq_len, np.random.default_rng(1))
    truth = np.log(w.transition[chains[:, None], seqs] + 1e-300)
    assert np.allclose(kl_to_truth(truth, w, seqs, chains), 0.0, atol=1e-9)
    late = slice(12, None)
    bayes = kl_to_truth(bayes_logp(w, seqs, np.full(6, 1 / 6))[:, late], w, seqs[:, late], chains).mean()
    agnostic = kl_to_truth(np.log(w.transition.mean(0)[seqs][:, late] + 1e-300), w, seqs[:, late], chains).mean()
    assert 0 < bayes < 0.25 * agnostic


# --- end to end ---------------------------------------------------------------------------------


def test_train_toy_deterministic():
    cfg = ToyConfig(**{**TINY, "steps": 10})
    a, b = train_toy(cfg, 0.05, 0), train_toy(cfg, 0.05, 0)
    assert dataclasses.replace(a, seconds=0) == dataclasses.replace(b, seconds=0)


def test_tiny_curve_and_plot(tmp_path: Path):
    cfg = ToyConfig(**TINY)
    result = run_toy_curve(cfg)
    assert [(r.share, r.seed) for r in result.rows] == [(0.05, 0), (0.05, 1), (1 / 6, 0), (1 / 6, 1)]
    for r in result.rows:
        assert 0 <= r.minority_entanglement <= 1 + 1e-9 and 0 <= r.others_entanglement <= 1 + 1e-9
        assert r.minority_norm_ratio > 0 and r.kl >= 0 and len(r.entanglements) == cfg.n_chains
    s = result.summary
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in s.items())
    for key in ("spearman_rho", "spearman_p", "welch_bound", "random_level", "minority_entanglement_share_0.05",
                "minority_entanglement_share_0.1667", "paired_diff_share_0.05"):
        assert math.isfinite(s[key]), key
    m = np.mean([r.minority_entanglement for r in result.rows if r.share == 0.05])
    assert math.isclose(s["minority_entanglement_share_0.05"], m)
    path = tmp_path / "toy.png"
    plot_toy_curve(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_yaml_config_mirrors_dataclass():
    conf = yaml.safe_load((CONF / "default.yaml").read_text())
    assert conf.keys() == {f.name for f in dataclasses.fields(ToyConfig)}
    assert ToyConfig(**conf) == ToyConfig()
    paper = yaml.safe_load((CONF / "paper.yaml").read_text())
    assert paper.keys() == conf.keys() and paper["design"] == "paper"
    PAPER.validate()


# --- the paper's design (toy=paper) -------------------------------------------------------------


def test_paper_world_is_three_deterministic_cycles_over_four_shared_states():
    assert (PAPER.n_chains, PAPER.n_states, PAPER.n_features, PAPER.feature_dim) == (3, 4, 12, 4)
    T = make_world(PAPER, np.random.default_rng(0)).transition
    assert T.shape == (3, 4, 4) and set(np.unique(T)) == {0.0, 1.0} and np.allclose(T.sum(2), 1)  # deterministic
    successors = T.argmax(2)
    for succ in successors:  # each chain one cycle through all 4 states
        x, visited = 0, []
        for _ in range(4):
            visited.append(x)
            x = succ[x]
        assert x == 0 and sorted(visited) == [0, 1, 2, 3]
    assert len({tuple(s) for s in successors}) == 3
    # The world is fixed (not drawn per seed) and shares as few (state, successor) steps as 3 cycles can: 2.
    assert np.array_equal(T, make_world(PAPER, np.random.default_rng(9)).transition)
    assert sum((successors[a] == successors[b]).sum() for a in range(3) for b in range(a)) == 2


def test_paper_features_are_the_twelve_chain_start_sequences():
    world = make_world(PAPER, np.random.default_rng(0))
    seqs, chains = feature_sequences(world, PAPER.seq_len)
    assert seqs.shape == (12, 16) and len({tuple(s) for s in seqs}) == 12
    assert chains.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and seqs[:, 0].tolist() == [0, 1, 2, 3] * 3
    assert (world.transition[chains[:, None], seqs[:, :-1], seqs[:, 1:]] == 1).all()  # every step the chain's
    assert np.array_equal(seqs[:, 4:], seqs[:, :-4])  # period 4
    # Sampling with the share as a fraction of each other chain's: share 0.5 -> chain 0 gets 0.5 / 2.5.
    labels = training_chains(dataclasses.replace(PAPER, steps=100, batch_size=50), 0.5, np.random.default_rng(0))
    assert np.bincount(labels).tolist() == [1000, 2000, 2000]
    assert PAPER.uniform_share == 1.0 and PAPER.minority_fraction(1.0) == pytest.approx(1 / 3)


def test_paper_model_residual_stream_is_four_dimensional_without_bypass():
    torch.manual_seed(0)
    model = ToyTransformer(PAPER)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["tok_emb.weight"] == (4, 4) and shapes["pos_emb.weight"] == (16, 4)
    assert shapes["readout.weight"] == (4, 4)  # logits read from the 4-d stream
    assert not any(name.startswith(("bottleneck", "token_logits")) for name in shapes)
    assert sum(name.startswith("blocks.") and name.endswith("qkv.weight") for name in shapes) == 4  # 4 layers
    assert shapes["blocks.0.qkv.weight"] == (12, 4) and shapes["blocks.0.mlp.0.weight"] == (16, 4)
    assert all(4 in shape or shape == (12,) or shape == (16,) for shape in shapes.values())
    x = torch.randint(4, (3, 15))
    logits, z = model(x)
    assert z.shape == (3, 15, 4)
    # No route around the stream: the logits are a function of z alone.
    assert torch.allclose(logits, model.readout(model.ln_f(z)))


def test_welch_bound_for_twelve_in_four_against_a_tight_frame():
    # Independent of the formula's code: the union of 3 orthonormal bases of R^4 is a unit-norm tight
    # frame, whose mean squared off-diagonal |cos| equals the Welch bound squared; no set of 12 does better.
    rng = np.random.default_rng(0)
    V = np.concatenate([np.linalg.qr(rng.normal(size=(4, 4)))[0].T for _ in range(3)])
    cos2 = (V @ V.T) ** 2
    rms = math.sqrt((cos2.sum() - 12) / (12 * 11))
    assert math.isclose(welch_bound(12, 4), rms, rel_tol=1e-9)
    assert math.isclose(welch_bound(12, 4), math.sqrt(8 / 44)) and round(welch_bound(12, 4), 3) == 0.426
    for _ in range(200):
        assert entanglement(rng.normal(size=(12, 4))).max() >= welch_bound(12, 4)


def test_random_level_for_twelve_in_four_against_the_exact_integral():
    # |cos| of two random directions in R^4 has density (4/pi)·sqrt(1 - t^2) on [0, 1], so with 11
    # others E[max] = ∫ (1 - F(t)^11) dt, F(t) = (2/pi)(t·sqrt(1 - t^2) + arcsin t).
    t = np.linspace(0, 1, 200001)
    cdf = (2 / np.pi) * (t * np.sqrt(1 - t ** 2) + np.arcsin(t))
    exact = float(np.mean(1 - cdf ** 11))  # uniform grid on [0, 1]: the mean is the integral
    assert abs(random_entanglement_level(4, 11, trials=20000) - exact) < 0.005
    assert round(exact, 2) == 0.84


def test_probe_directions_recover_planted_features():
    # z = token offset + feature vector + noise, 6 features in 6-d: orthogonal features give nearly
    # orthogonal probe directions; a feature planted on another's vector is entangled with it.
    rng = np.random.default_rng(0)
    S, T, n = 3, 12, 6
    seqs = rng.integers(S, size=(n * 20, T))
    features = np.repeat(np.arange(n), 20)
    B = np.eye(n) * 3
    z = rng.normal(size=(S, n))[seqs] * 5 + B[features][:, None, :] + rng.normal(size=(n * 20, T, n)) * 0.3
    ent = entanglement(probe_directions(z, seqs, features, late_from=2))
    assert ent.max() < 0.35
    B[1] = B[0]
    z = rng.normal(size=(S, n))[seqs] * 5 + B[features][:, None, :] + rng.normal(size=(n * 20, T, n)) * 0.3
    ent = entanglement(probe_directions(z, seqs, features, late_from=2))
    assert ent[0] > 0.7 and ent[1] > 0.7 and np.delete(ent, [0, 1]).max() < 0.5


def test_paper_design_options_are_checked():
    with pytest.raises(ConfigError, match="toy.converge_tol"):
        ToyConfig(converge_tol=0.01).validate()
    with pytest.raises(ConfigError, match="toy.batch_size=0"):
        ToyConfig(batch_size=0).validate()
    with pytest.raises(ConfigError, match="toy.n_states=8"):
        dataclasses.replace(PAPER, n_states=8).validate()
    with pytest.raises(ConfigError, match="toy.n_chains=7"):
        dataclasses.replace(PAPER, n_states=3, n_chains=7).validate()


def test_exact_training_converges_towards_the_bayes_loss():
    cfg = dataclasses.replace(PAPER, steps=60, converge_every=30, warmup_steps=5, lr=0.03)
    short = train_toy(dataclasses.replace(cfg, steps=2, converge_every=1), 0.3, 0)
    longer = train_toy(cfg, 0.3, 0)
    assert 0 < longer.excess_loss < short.excess_loss and longer.steps_run == 60
    early = train_toy(dataclasses.replace(cfg, converge_tol=10.0), 0.3, 0)  # met at the first check
    assert early.steps_run == 30


def test_tiny_paper_curve_end_to_end(tmp_path: Path):
    cfg = dataclasses.replace(PAPER, shares=[0.1], seeds=[0, 1], steps=20, converge_every=10, warmup_steps=5,
                              random_trials=500)
    seen = []
    result = run_toy_curve(cfg, on_row=seen.append)
    assert [(r.share, r.seed) for r in result.rows] == [(0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    assert sorted(seen, key=lambda r: (r.share, r.seed)) == result.rows
    for r in result.rows:
        assert len(r.entanglements) == 12 and all(0 <= e <= 1 + 1e-9 for e in r.entanglements)
        assert r.minority_entanglement == pytest.approx(np.mean(r.entanglements[:4]))
        assert r.others_entanglement == pytest.approx(np.mean(r.entanglements[4:]))
        assert r.steps_run == 20 and r.excess_loss > 0
    s = result.summary
    assert s["welch_bound"] == pytest.approx(0.4264, abs=1e-4) and abs(s["random_level"] - 0.84) < 0.02
    assert math.isfinite(s["paired_diff_share_0.1"])
    table = summary_table(result)
    assert "12 features in 4 dimensions" in table and "converged" in table
    plot_toy_curve(result, tmp_path / "toy.png")
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"
