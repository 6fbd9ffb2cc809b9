"""The toy world: N Markov chains on one shared state space, and sequences sampled from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detox.toy.config import ToyConfig


@dataclass
class World:
    cycle_pos: np.ndarray  # (S,) position of each state on the shared cycle
    groups: np.ndarray  # (N, S/N) preferred states of each chain
    transition: np.ndarray  # (N, S, S) P(next | current, chain)


def make_world(cfg: ToyConfig, rng: np.random.Generator) -> World:
    """Random shared cycle and random partition of the states into the chains' preferred groups
    (chain 0's first `minority_overlap` states replaced by chain 1's)."""
    S, N = cfg.n_states, cfg.n_chains
    cycle = rng.permutation(S)  # cycle[k] is the k-th state around the cycle
    cycle_pos = np.argsort(cycle)
    groups = rng.permutation(S).reshape(N, S // N)
    groups[0, : cfg.minority_overlap] = groups[1, : cfg.minority_overlap]
    transition = np.zeros((N, S, S))
    for x in range(S):
        succ = cycle[(cycle_pos[x] + np.arange(1, cfg.max_step + 1)) % S]
        for c in range(N):
            w = np.exp(cfg.beta * np.isin(succ, groups[c]))
            transition[c, x, succ] = w / w.sum()
    return World(cycle_pos, groups, transition)


def chain_counts(n_seqs: int, share: float, n_chains: int) -> np.ndarray:
    """Exact number of sequences per chain: round(share·n) for chain 0, the rest split equally."""
    counts = np.zeros(n_chains, dtype=int)
    counts[0] = round(share * n_seqs)
    rest = n_seqs - counts[0]
    counts[1:] = rest // (n_chains - 1)
    counts[1 : 1 + rest % (n_chains - 1)] += 1
    return counts


def sample_sequences(
    world: World, chains: np.ndarray, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample one sequence per entry of `chains` (uniform start state). Returns (len(chains), seq_len)."""
    S = world.transition.shape[1]
    seqs = np.empty((len(chains), seq_len), dtype=np.int64)
    seqs[:, 0] = rng.integers(S, size=len(chains))
    for t in range(1, seq_len):
        cdf = world.transition[chains, seqs[:, t - 1]].cumsum(1)
        u = rng.random((len(chains), 1))
        seqs[:, t] = np.minimum((u > cdf).sum(1), S - 1)  # guard against cdf[-1] < 1 by rounding
    return seqs


def training_chains(cfg: ToyConfig, share: float, rng: np.random.Generator) -> np.ndarray:
    """Chain label of every training sequence (steps·batch of them), exact shares, shuffled."""
    counts = chain_counts(cfg.steps * cfg.batch_size, share, cfg.n_chains)
    return rng.permutation(np.repeat(np.arange(cfg.n_chains), counts))
