"""Training one toy model and measuring its chain features."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from detox.core.geometry import entanglement
from detox.core.schedule import warmup_cosine
from detox.toy.config import ToyConfig
from detox.toy.directions import feature_directions, probe_directions
from detox.toy.model import ToyTransformer
from detox.toy.chains import (
    World,
    chain_counts,
    feature_sequences,
    make_world,
    sample_sequences,
    training_chains,
)


@dataclass
class ToyRunResult:
    """One trained model: (share, seed) and what was measured on it."""

    share: float
    seed: int
    minority_entanglement: float  # entanglement of chain 0's feature (paper: mean over its features)
    others_entanglement: float  # mean entanglement of the other chains' features
    minority_norm_ratio: float  # mean token-centred mean norm of chain 0's features / the others'
    kl: float  # KL(true chain 0 || model) in nats, late positions
    kl_others: float  # same, mean over chains 1..N-1
    kl_bayes: float  # KL of the Bayes-optimal predictor on chain 0 (the floor for `kl`)
    entanglements: list[float]  # per feature (soft: per chain; paper: feature = chain·S + start state)
    norms: list[float]  # per feature, the norm of its token-centred mean
    final_loss: float  # mean training CE over the last 50 steps (nats)
    steps_run: int  # optimiser steps taken (paper: fewer than cfg.steps once converged)
    excess_loss: float  # paper: exact training loss above the Bayes-optimal one at the end (nats); soft: nan
    seconds: float


def kl_to_truth(pred_logp: np.ndarray, world: World, seqs: np.ndarray, chains: np.ndarray) -> np.ndarray:
    """Per-sequence mean KL(true next-state distribution || predicted), over the given positions.

    pred_logp: (B, T, S) predicted log-probabilities (finite) at the positions of seqs (B, T)."""
    p = world.transition[chains[:, None], seqs]  # (B, T, S)
    log_ratio = np.log(np.where(p > 0, p, 1.0)) - pred_logp
    return (p * log_ratio).sum(-1).mean(1)


def bayes_logp(world: World, seqs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Log-probabilities of the Bayes-optimal next-state predictor (knows the world and the chain
    shares, infers the chain from the prefix). Returns (B, T, S)."""
    T = world.transition
    step_logp = np.log(T[:, seqs[:, :-1], seqs[:, 1:]] + 1e-300)  # (N, B, T-1)
    cum = np.concatenate([np.zeros_like(step_logp[:, :, :1]), step_logp.cumsum(2)], axis=2)
    log_post = cum + np.log(np.maximum(prior, 1e-300))[:, None, None]
    post = np.exp(log_post - log_post.max(0))
    post /= post.sum(0)  # (N, B, T) posterior over chains given the prefix up to t
    return np.log(np.einsum("nbt,nbts->bts", post, T[:, seqs]) + 1e-300)


def excess_loss(model: ToyTransformer, world: World, seqs: np.ndarray, weights: np.ndarray,
                prior: np.ndarray) -> float:
    """Exact expected training loss of `model` above the Bayes-optimal loss (nats a position), over a
    world's every sequence `seqs` (F, T) weighted by its training probability `weights` (F,); prior:
    the chain probabilities the Bayes predictor assumes."""
    target = seqs[:, 1:, None]
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(seqs[:, :-1]))
    model_nll = -np.take_along_axis(torch.log_softmax(logits, -1).double().numpy(), target, 2)
    bayes_nll = -np.take_along_axis(bayes_logp(world, seqs, prior)[:, :-1], target, 2)
    return float(weights @ (model_nll - bayes_nll).mean((1, 2)))


def train_toy(cfg: ToyConfig, share: float, seed: int) -> ToyRunResult:
    """Train one model with minority share `share` and measure its features."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    world_rng, data_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    world = make_world(cfg, world_rng)
    if cfg.design == "paper":
        # Every sequence is one of the N·S features' (uniform start state): train on those, weighted
        # (exact expected loss) or sampled by index.
        pool, pool_chains = feature_sequences(world, cfg.seq_len)
        fraction = cfg.minority_fraction(share)
        prior = np.r_[fraction, np.full(cfg.n_chains - 1, (1 - fraction) / (cfg.n_chains - 1))]
        weights = prior[pool_chains] / cfg.n_states
        if cfg.batch_size:
            chains = training_chains(cfg, share, data_rng)
            order = chains * cfg.n_states + data_rng.integers(cfg.n_states, size=len(chains))
    else:
        chains = training_chains(cfg, share, data_rng)
        prior = chain_counts(len(chains), share, cfg.n_chains) / len(chains)
        pool, order = sample_sequences(world, chains, cfg.seq_len, data_rng), np.arange(len(chains))
    pool_t = torch.from_numpy(pool)
    exact = cfg.batch_size == 0
    order_t, weights_t = (None, torch.from_numpy(weights)) if exact else (torch.from_numpy(order), None)

    model = ToyTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps, final=0.0))
    losses, excess = [], math.nan
    for step in range(cfg.steps):
        batch = pool_t if exact else pool_t[order_t[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
        logits, _ = model(batch[:, :-1])
        if exact:
            loss = weights_t.float() @ F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").mean(1)
        else:
            loss = F.cross_entropy(logits.reshape(-1, cfg.n_states), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if cfg.design == "paper" and ((step + 1) % cfg.converge_every == 0 or step + 1 == cfg.steps):
            excess = excess_loss(model, world, pool, weights, prior)
            if excess < cfg.converge_tol:
                break

    if cfg.design == "paper":  # the N·S distinct sequences, each once: a feature-balanced set, at the
        # positions training saw (the last position's embedding is never trained)
        eval_seqs, eval_chains = pool[:, :-1], pool_chains
        features = np.arange(len(pool))
    else:  # balanced held-out set: every chain weighs the same in the token means and directions
        eval_chains = np.repeat(np.arange(cfg.n_chains), cfg.eval_per_chain)
        eval_seqs = sample_sequences(world, eval_chains, cfg.seq_len, eval_rng)
        features = eval_chains
    with torch.no_grad():
        logits, z = model(torch.from_numpy(eval_seqs))
    z = z.numpy()
    means = feature_directions(z, eval_seqs, features, cfg.late_from)
    V = probe_directions(z, eval_seqs, features, cfg.late_from, cfg.probe_c) if cfg.design == "paper" else means
    ent, norms = entanglement(V), np.linalg.norm(means, axis=1)
    minority_feature = np.isin(np.arange(len(V)), features[eval_chains == 0])

    late = slice(cfg.late_from, None)
    kl = kl_to_truth(torch.log_softmax(logits, -1).numpy()[:, late], world, eval_seqs[:, late], eval_chains)
    kl_b = kl_to_truth(bayes_logp(world, eval_seqs, prior)[:, late], world, eval_seqs[:, late], eval_chains)
    minority = eval_chains == 0
    return ToyRunResult(
        share=share,
        seed=seed,
        minority_entanglement=float(ent[minority_feature].mean()),
        others_entanglement=float(ent[~minority_feature].mean()),
        minority_norm_ratio=float(norms[minority_feature].mean() / norms[~minority_feature].mean()),
        kl=float(kl[minority].mean()),
        kl_others=float(kl[~minority].mean()),
        kl_bayes=float(kl_b[minority].mean()),
        entanglements=ent.tolist(),
        norms=norms.tolist(),
        final_loss=float(np.mean(losses[-50:])),
        steps_run=len(losses),
        excess_loss=excess,
        seconds=time.perf_counter() - start,
    )
