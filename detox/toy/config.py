"""The toy experiment's configuration (light: no torch, so it is validated with the rest of a job)."""

from __future__ import annotations

from dataclasses import dataclass

from detox.core.schema import ConfigError, number


@dataclass
class ToyConfig:
    # --- world ---
    n_chains: int = number(6, "[2, inf)")
    """N, number of Markov chains (features). 6 > latent_dim forces superposition ."""
    n_states: int = number(18, "[2, inf)")
    """Size of the shared state space; must be a multiple of n_chains (each chain prefers n_states/N)."""
    max_step: int = number(3, "[1, inf)")
    """The walker moves 1..max_step steps along the shared cycle, so each state has max_step successors."""
    beta: float = number(3.0, "[0, inf)")
    """Preference strength (nats): P(y | x, c) ∝ exp(beta·[y in chain c's group])."""
    minority_overlap: int = number(0, "[0, inf)")
    """How many of the minority chain's preferred states it shares with chain 1's group (0 = none). > 0 gives the minority a close majority neighbour it could collapse onto; the
    states it gives up are then preferred by no chain."""
    seq_len: int = number(24, "[2, inf)")
    """Tokens per sequence: long enough to infer the chain from accumulated evidence."""
    shares: list[float] = number([0.002, 0.005, 0.01, 0.02, 0.05, 0.1], "(0, 1)")
    """Minority shares of the training sequences (fractions). The uniform share 1/N is always run too
    (it is each seed's paired baseline), so it need not be listed."""
    seeds: list[int] = number(list(range(10)), "[0, inf)")
    """Seeds; a seed fixes the world (cycle, groups), the data and the initial weights. Paper: 10."""

    # --- model ---
    d_model: int = number(16, "[1, inf)")
    """Residual-stream width. Width 4 did not learn the chains in budget, 16 did."""
    n_layers: int = number(4, "[1, inf)")
    """Transformer blocks (paper: 4 layers)."""
    n_heads: int = number(1, "[1, inf)")
    """Attention heads per block (head dim = d_model / n_heads). 1 head learned the chains as well as
    2 in a 4-seed check and costs 30 % less time a step on CPU."""
    mlp_ratio: int = number(2, "[1, inf)")
    """MLP hidden width as a multiple of d_model (2, not the usual 4: cheaper, learned as well)."""
    latent_dim: int = number(4, "[1, inf)")
    """M, width of the bottleneck before the readout: the space the chain features must share."""

    # --- training ---
    steps: int = number(800, "[1, inf)")
    """Optimiser steps. Sized so the default 10-seed curve fits in 10 minutes on 2 CPU cores; at
    lr 0.06 the uniform-share models then reach late-position KL ≈ 0.07 nats to the true chain
    (chain-agnostic predictor ≈ 0.22, Bayes-optimal ≈ 0.01), i.e. the chains are learned."""
    batch_size: int = number(64, "[1, inf)")
    """Sequences per step; fresh sequences every step (no epochs), sampled with exact shares."""
    lr: float = number(0.06, "(0, inf)")
    """Peak AdamW learning rate (linear warm-up, cosine decay to 0). Chosen on the uniform run's KL
    (0.01 left the chains barely learned in 800 steps); tiny models take a large lr."""
    warmup_steps: int = number(50, "[0, inf)")
    """Linear warm-up steps."""
    weight_decay: float = number(0.0, "[0, inf)")
    """AdamW weight decay. 0 so the minority feature's norm is not shrunk by the optimiser itself."""

    # --- measurement ---
    late_from: int = number(12, "[0, inf)")
    """First position counted as "late": by then the chain is mostly identifiable from the prefix."""
    eval_per_chain: int = number(256, "[1, inf)")
    """Held-out sequences per chain (balanced) for feature directions and KL."""
    random_trials: int = number(20000, "[1, inf)")
    """Monte Carlo trials for the random-direction reference level (fixed seed 0)."""
    workers: int = number(1, "[1, inf)")
    """Processes for run_toy_curve (each uses 1 torch thread); 1 runs in the calling process."""

    def validate(self) -> None:
        """The rules that span fields (ranges are checked with the rest of the job's config)."""
        if self.n_states % self.n_chains:
            raise ConfigError(f"toy.n_states={self.n_states} is not a multiple of toy.n_chains={self.n_chains}")
        if self.max_step >= self.n_states:
            raise ConfigError(f"toy.max_step={self.max_step} must be below toy.n_states={self.n_states}")
        if self.minority_overlap > self.n_states // self.n_chains:
            raise ConfigError(f"toy.minority_overlap={self.minority_overlap} exceeds a chain's group of "
                              f"{self.n_states // self.n_chains} states")
        if self.late_from >= self.seq_len:
            raise ConfigError(f"toy.late_from={self.late_from} must be below toy.seq_len={self.seq_len}")
        if self.latent_dim >= self.n_chains:
            raise ConfigError(f"toy.latent_dim={self.latent_dim} must be below toy.n_chains={self.n_chains}: "
                              "with room for every chain there is no superposition to measure")
        if self.d_model % self.n_heads:
            raise ConfigError(f"toy.d_model={self.d_model} is not divisible by toy.n_heads={self.n_heads}")
