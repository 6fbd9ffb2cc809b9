"""Tests for detox.toy: geometry numerics against independent computations, the generator's
properties, and a tiny end-to-end curve."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detox.toy.config import ToyConfig
from detox.core.geometry import entanglement, random_entanglement_level, welch_bound
from detox.toy.geometry import feature_directions
from detox.toy.plot import plot_toy_curve
from detox.toy.sweep import run_toy_curve
from detox.toy.train import bayes_logp, kl_to_truth, train_toy
from detox.toy.world import chain_counts, make_world, sample_sequences, training_chains

torch.set_num_threads(1)  # the machine is shared; the tiny models gain nothing from more threads

TINY = dict(shares=[0.05], seeds=[0, 1], steps=30, batch_size=16, warmup_steps=5, eval_per_chain=16,
            random_trials=500, workers=1)


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
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf/toy/default.yaml").read_text())
    assert conf.keys() == {f.name for f in dataclasses.fields(ToyConfig)}
    assert ToyConfig(**conf) == ToyConfig()
