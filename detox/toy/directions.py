"""Feature directions in a model's activations: token-centred class means, or the paper's probes."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def feature_directions(z: np.ndarray, seqs: np.ndarray, chains: np.ndarray, late_from: int) -> np.ndarray:
    """Feature direction of each class (a chain, or in the paper design a feature), token-centred. Returns (N, M).

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


def probe_directions(z: np.ndarray, seqs: np.ndarray, features: np.ndarray, late_from: int,
                     c: float = 1.0) -> np.ndarray:
    """Feature directions from linear probes, as the paper's Remark 2 builds them. Returns (F, M).

    For every feature f and current token x: a one-vs-rest logistic-regression probe (L2, inverse
    strength c) on the activations z[b, t] (z: (B, T, M)) at late positions t >= late_from whose token
    seqs[b, t] is x, labelled by whether sequence b has feature f (features: (B,)). The direction of f
    is the mean over tokens of the probes' unit normals; tokens where f never occurs are skipped.
    """
    zl, xl = z[:, late_from:].reshape(-1, z.shape[-1]), seqs[:, late_from:].reshape(-1)
    fl = np.repeat(features, seqs.shape[1] - late_from)
    directions = np.zeros((features.max() + 1, z.shape[-1]))
    for f in range(len(directions)):
        normals = []
        for x in np.unique(xl[fl == f]):
            at_x = xl == x
            if (fl[at_x] == f).all():
                continue  # no other feature at this token: nothing to separate from
            probe = LogisticRegression(C=c, solver="newton-cholesky", max_iter=1000).fit(zl[at_x], fl[at_x] == f)
            normals.append(probe.coef_[0] / np.linalg.norm(probe.coef_[0]))
        directions[f] = np.mean(normals, 0)
    return directions
