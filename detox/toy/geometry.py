"""Feature directions of the chains and how entangled they are, with the reference levels."""

from __future__ import annotations

import math

import numpy as np


def feature_directions(z: np.ndarray, seqs: np.ndarray, chains: np.ndarray, late_from: int) -> np.ndarray:
    """Feature direction of each chain, token-centred. Returns (N, M).

    Over late positions t >= late_from of a chain-balanced set (z: (B, T, M) latents, seqs: (B, T)
    states, chains: (B,) labels): first subtract from every z[b, t] the mean latent of all late
    positions whose current state equals seqs[b, t] (the token's own offset, which otherwise swamps
    the latent); the direction of chain c is then the mean of those residuals over c's sequences.
    Its norm says how strongly the model separates c; its direction, how it represents c.
    """
    zl, xl = z[:, late_from:].reshape(-1, z.shape[-1]), seqs[:, late_from:].reshape(-1)
    cl = np.repeat(chains, seqs.shape[1] - late_from)
    S, N = xl.max() + 1, chains.max() + 1
    token_mean = np.zeros((S, zl.shape[1]))
    np.add.at(token_mean, xl, zl)
    token_mean /= np.maximum(np.bincount(xl, minlength=S), 1)[:, None]
    resid = zl - token_mean[xl]
    return np.stack([resid[cl == c].mean(0) for c in range(N)])


def entanglement(V: np.ndarray) -> np.ndarray:
    """Per row i of V (n, m): max over j != i of |cos(v_i, v_j)|."""
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    C = np.abs(U @ U.T)
    np.fill_diagonal(C, -np.inf)
    return C.max(1)


def welch_bound(n: int, m: int) -> float:
    """Lower bound on the largest |cos| among n unit vectors in R^m: sqrt((n-m)/((n-1)m)); 0 if n <= m."""
    return math.sqrt((n - m) / ((n - 1) * m)) if n > m else 0.0


def random_level(n: int, m: int, trials: int = 20000, seed: int = 0) -> float:
    """Expected entanglement of one of n isotropic random directions in R^m (Monte Carlo, fixed seed)."""
    X = np.random.default_rng(seed).standard_normal((trials, n, m))
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    C = np.abs(X @ X.transpose(0, 2, 1))
    C[:, np.arange(n), np.arange(n)] = -np.inf
    return float(C.max(2).mean())
