"""Directions and how entangled they are: the measures the probe stage and the toy experiment share.

Entanglement of a direction = the largest |cosine| between it and any other direction of a set
(the paper's Equation 1). Two reference levels say what a number means: the Welch bound, the least
possible largest |cosine| of n unit vectors in m dimensions, and the level of random directions.
"""

from __future__ import annotations

import math

import numpy as np

from detox.core.schema import ConfigError


def unit(vectors: np.ndarray) -> np.ndarray:
    """Vectors scaled to unit length along the last axis (a zero vector stays zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def entanglement(vectors: np.ndarray) -> np.ndarray:
    """Per row i of `vectors` (n, m): the largest |cos(v_i, v_j)| over j != i."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ConfigError(f"entanglement: needs (n >= 2, dim) vectors, got shape {vectors.shape}")
    if not (np.linalg.norm(vectors, axis=1) > 0).all():
        raise ConfigError("entanglement: zero vectors have no direction")
    cosines = np.abs(unit(vectors) @ unit(vectors).T)
    np.fill_diagonal(cosines, -np.inf)
    return cosines.max(1)


def welch_bound(n: int, m: int) -> float:
    """The least possible largest |cos| among n unit vectors in R^m: sqrt((n-m)/((n-1)m)); 0 if n <= m."""
    return math.sqrt((n - m) / ((n - 1) * m)) if n > m else 0.0


def random_entanglement_level(dim: int, n_others: int, trials: int = 1000, seed: int = 0) -> float:
    """Expected largest |cosine| of a random unit vector with `n_others` random unit vectors in `dim`
    dimensions (Monte Carlo over `trials` draws of isotropic Gaussian vectors, fixed seed): a direction
    is entangled with others only if it beats this chance level."""
    if dim < 1 or n_others < 1 or trials < 1:
        raise ConfigError(f"random_entanglement_level: dim={dim}, n_others={n_others}, trials={trials} "
                          "must all be at least 1")
    rng = np.random.default_rng(seed)
    levels = np.empty(trials)
    chunk = max(1, 2 ** 22 // (n_others * dim))  # trials per draw: bounds the memory of `others`
    for start in range(0, trials, chunk):
        size = min(chunk, trials - start)
        direction = unit(rng.standard_normal((size, 1, dim)))
        others = unit(rng.standard_normal((size, n_others, dim)))
        levels[start:start + size] = np.abs((others * direction).sum(-1)).max(1)
    return float(levels.mean())
