"""The toy experiment's configuration (light: no torch, so it is validated with the rest of a job)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detox.core.schema import ConfigError, choice, number


@dataclass
class ToyConfig:
    design: str = choice("soft", "soft", "paper")
    """soft: this project's toy (soft chains on a shared cycle, a `latent_dim`-d bottleneck beside a
    token-to-logits bypass, token-centred mean directions, one feature per chain, a new world per seed).
    paper: the paper's toy as secondary sources read it (deterministic cyclic chains over the shared
    states, one feature per (chain, start state), the residual stream itself is the feature space with
    no bottleneck and no bypass, directions from per-(feature, current token) linear probes averaged
    over tokens, one fixed world, trained until the loss is within `converge_tol` of the optimum)."""

    # --- world ---
    n_chains: int = number(6, "[2, inf)")
    """N, number of Markov chains. soft: one feature each, 6 > latent_dim forces superposition.
    paper: 3, each with n_states features (one per start state)."""
    n_states: int = number(18, "[2, inf)")
    """Size of the shared state space. soft: a multiple of n_chains (each chain prefers n_states/N).
    paper: 4, each chain a different cycle through all of them (at most 7, so the cycles can be listed)."""
    max_step: int = number(3, "[1, inf)")
    """soft only: the walker moves 1..max_step steps along the shared cycle (max_step successors a state)."""
    beta: float = number(3.0, "[0, inf)")
    """soft only: preference strength (nats): P(y | x, c) ∝ exp(beta·[y in chain c's group])."""
    minority_overlap: int = number(0, "[0, inf)")
    """soft only: how many of the minority chain's preferred states it shares with chain 1's group
    (0 = none). > 0 gives the minority a close majority neighbour it could collapse onto; the
    states it gives up are then preferred by no chain."""
    seq_len: int = number(24, "[2, inf)")
    """Tokens per sequence: long enough to infer the chain from accumulated evidence."""
    shares: list[float] = number([0.002, 0.005, 0.01, 0.02, 0.05, 0.1], "(0, 1)")
    """Minority shares. soft: fractions of all training sequences, the uniform share 1/N always run too.
    paper: the minority chain's sequences as a fraction of each other chain's (the paper's "1 % to
    100 %"), the uniform share 1 always run too. The uniform share is each seed's paired baseline."""
    seeds: list[int] = number(list(range(10)), "[0, inf)")
    """Seeds; a seed fixes the data order and the initial weights, and in the soft design the world
    (cycle, groups). Paper: 10."""

    # --- model ---
    d_model: int = number(16, "[1, inf)")
    """Residual-stream width. soft: width 4 did not learn the chains in budget, 16 did. paper: 4, the
    space the n_chains·n_states features share."""
    n_layers: int = number(4, "[1, inf)")
    """Transformer blocks (paper: 4 layers)."""
    n_heads: int = number(1, "[1, inf)")
    """Attention heads per block (head dim = d_model / n_heads). 1 head learned the chains as well as
    2 in a 4-seed check and costs 30 % less time a step on CPU."""
    mlp_ratio: int = number(2, "[1, inf)")
    """MLP hidden width as a multiple of d_model (2, not the usual 4: cheaper, learned as well)."""
    latent_dim: int = number(4, "[1, inf)")
    """soft only: M, width of the bottleneck before the readout, the space the chain features share
    (the paper design has no bottleneck: its features share the d_model-d residual stream)."""

    # --- training ---
    steps: int = number(800, "[1, inf)")
    """Optimiser steps (paper: the most, if the loss has not converged before; the schedule spans
    them). soft: sized so the default 10-seed curve fits in 10 minutes on 2 CPU cores; at
    lr 0.06 the uniform-share models then reach late-position KL ≈ 0.07 nats to the true chain
    (chain-agnostic predictor ≈ 0.22, Bayes-optimal ≈ 0.01), i.e. the chains are learned."""
    converge_tol: float = number(0.0, "[0, inf)")
    """paper only: stop once the exact training loss (over the finitely many sequences, weighted by
    their training shares) is within this many nats of the Bayes-optimal loss; 0 = run all steps."""
    converge_every: int = number(100, "[1, inf)")
    """paper only: steps between two convergence checks."""
    batch_size: int = number(64, "[0, inf)")
    """Sequences per step; fresh sequences every step (no epochs), sampled with exact shares. paper
    only: 0 = every step the exact expected loss over the world's N·S sequences, each weighted by its
    training probability (the limit of endless data; no sampling noise)."""
    lr: float = number(0.06, "(0, inf)")
    """Peak AdamW learning rate (linear warm-up, cosine decay to 0). Chosen on the uniform run's KL
    (0.01 left the chains barely learned in 800 steps); tiny models take a large lr."""
    warmup_steps: int = number(50, "[0, inf)")
    """Linear warm-up steps."""
    weight_decay: float = number(0.0, "[0, inf)")
    """AdamW weight decay. 0 so the minority feature's norm is not shrunk by the optimiser itself."""

    # --- measurement ---
    late_from: int = number(12, "[0, inf)")
    """First position counted as "late" (directions and KL): by then the chain is mostly identifiable
    from the prefix."""
    eval_per_chain: int = number(256, "[1, inf)")
    """soft only: held-out sequences per chain (balanced) for feature directions and KL (the paper
    design measures on its n_chains·n_states distinct sequences, each once)."""
    probe_c: float = number(1.0, "(0, inf)")
    """paper only: inverse L2 strength of the logistic-regression probes (sklearn's C)."""
    random_trials: int = number(20000, "[1, inf)")
    """Monte Carlo trials for the random-direction reference level (fixed seed 0)."""
    workers: int = number(1, "[1, inf)")
    """Processes for run_toy_curve (each uses 1 torch thread); 1 runs in the calling process."""

    @property
    def n_features(self) -> int:
        """How many feature directions are measured: one per chain (soft), per (chain, start) (paper)."""
        return self.n_chains * (self.n_states if self.design == "paper" else 1)

    @property
    def feature_dim(self) -> int:
        """Dimension of the space the features share: the bottleneck (soft), the residual stream (paper)."""
        return self.d_model if self.design == "paper" else self.latent_dim

    @property
    def uniform_share(self) -> float:
        """The share at which the minority chain gets as much data as any other (the paired baseline)."""
        return 1.0 if self.design == "paper" else 1.0 / self.n_chains

    def minority_fraction(self, share: float) -> float:
        """Fraction of all training sequences that belong to the minority chain at `share`."""
        return share / (share + self.n_chains - 1) if self.design == "paper" else share

    def validate(self) -> None:
        """The rules that span fields (ranges are checked with the rest of the job's config)."""
        if self.late_from >= self.seq_len:
            raise ConfigError(f"toy.late_from={self.late_from} must be below toy.seq_len={self.seq_len}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"toy.d_model={self.d_model} is not divisible by toy.n_heads={self.n_heads}")
        if self.design == "paper":
            self._validate_paper()
        else:
            self._validate_soft()

    def _validate_paper(self) -> None:
        if not 3 <= self.n_states <= 7:
            raise ConfigError(f"toy.n_states={self.n_states}: the paper design needs 3 to 7 states (its "
                              "chains are chosen among all cycles through them)")
        if self.n_chains > math.factorial(self.n_states - 1):
            raise ConfigError(f"toy.n_chains={self.n_chains} exceeds the {math.factorial(self.n_states - 1)} "
                              f"different cycles through {self.n_states} states")

    def _validate_soft(self) -> None:
        if self.converge_tol:
            raise ConfigError(f"toy.converge_tol={self.converge_tol}: only the paper design has an exact "
                              "loss to converge to; use 0 with toy.design=soft")
        if not self.batch_size:
            raise ConfigError("toy.batch_size=0 (the exact expected loss) needs toy.design=paper: the soft "
                              "design's sequences cannot all be listed")
        if self.n_states % self.n_chains:
            raise ConfigError(f"toy.n_states={self.n_states} is not a multiple of toy.n_chains={self.n_chains}")
        if self.max_step >= self.n_states:
            raise ConfigError(f"toy.max_step={self.max_step} must be below toy.n_states={self.n_states}")
        if self.minority_overlap > self.n_states // self.n_chains:
            raise ConfigError(f"toy.minority_overlap={self.minority_overlap} exceeds a chain's group of "
                              f"{self.n_states // self.n_chains} states")
        if self.latent_dim >= self.n_chains:
            raise ConfigError(f"toy.latent_dim={self.latent_dim} must be below toy.n_chains={self.n_chains}: "
                              "with room for every chain there is no superposition to measure")
