"""The toy world: N Markov chains on one shared state space, and sequences sampled from them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from detox.toy.config import ToyConfig


@dataclass
class World:
    transition: np.ndarray  # (N, S, S) P(next | current, chain)
    cycle_pos: np.ndarray | None = None  # soft: (S,) position of each state on the shared cycle
    groups: np.ndarray | None = None  # soft: (N, S/N) preferred states of each chain


def make_world(cfg: ToyConfig, rng: np.random.Generator) -> World:
    """The world of cfg.design: `soft_world` (drawn from rng) or `cycle_world` (fixed)."""
    return cycle_world(cfg) if cfg.design == "paper" else soft_world(cfg, rng)


def chain_cycles(n_states: int, n_chains: int) -> np.ndarray:
    """Successor tables (N, S) of N different cycles through all S states, chosen to share as few
    (state, successor) pairs as possible: chain 0 is 0 -> 1 -> ... -> S-1 -> 0, each next chain the
    first cycle (in lexicographic order) that shares the fewest pairs with those before it. For 4
    states and 3 chains: 0123, its reverse 0321, and 0132, which shares one pair with each (no
    3 cycles through 4 states avoid sharing, so no chain is identified by every single step)."""
    cycles = []
    for rest in itertools.permutations(range(1, n_states)):
        order = (0, *rest)
        successor = np.empty(n_states, dtype=np.int64)
        successor[list(order)] = order[1:] + order[:1]
        cycles.append(successor)
    chosen = [cycles.pop(0)]
    while len(chosen) < n_chains:
        shared = [sum(int((c == prev).sum()) for prev in chosen) for c in cycles]
        chosen.append(cycles.pop(int(np.argmin(shared))))
    return np.stack(chosen)


def cycle_world(cfg: ToyConfig) -> World:
    """The paper design's world: N deterministic cyclic chains over the S shared states, the same for
    every seed. A sequence is fixed by its (chain, start state): that pair is its feature."""
    successor = chain_cycles(cfg.n_states, cfg.n_chains)
    transition = np.zeros((cfg.n_chains, cfg.n_states, cfg.n_states))
    np.put_along_axis(transition, successor[..., None], 1.0, axis=2)
    return World(transition)


def feature_sequences(world: World, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sequence of a deterministic world, one per feature f = chain·S + start state.
    Returns (sequences (N·S, seq_len), chain of each)."""
    N, S, _ = world.transition.shape
    successor = world.transition.argmax(2)  # (N, S)
    chains = np.repeat(np.arange(N), S)
    seqs = np.empty((N * S, seq_len), dtype=np.int64)
    seqs[:, 0] = np.tile(np.arange(S), N)
    for t in range(1, seq_len):
        seqs[:, t] = successor[chains, seqs[:, t - 1]]
    return seqs, chains


def soft_world(cfg: ToyConfig, rng: np.random.Generator) -> World:
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
    return World(transition, cycle_pos, groups)


def chain_counts(n_seqs: int, share: float, n_chains: int) -> np.ndarray:
    """Exact number of sequences per chain: round(share·n) for chain 0, the rest split equally
    (share: the minority's fraction of all sequences, `ToyConfig.minority_fraction`)."""
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
    counts = chain_counts(cfg.steps * cfg.batch_size, cfg.minority_fraction(share), cfg.n_chains)
    return rng.permutation(np.repeat(np.arange(cfg.n_chains), counts))
