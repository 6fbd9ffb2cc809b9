"""Feature directions of the chains and how entangled they are, with the reference levels."""

from __future__ import annotations

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
