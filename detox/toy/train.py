"""Training one toy model and measuring its chain features."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from detox.core.schedule import warmup_cosine
from detox.toy.config import ToyConfig
from detox.core.geometry import entanglement
from detox.toy.geometry import feature_directions
from detox.toy.model import ToyTransformer
from detox.toy.world import World, chain_counts, make_world, sample_sequences, training_chains


@dataclass
class ToyRunResult:
    """One trained model: (share, seed) and what was measured on it."""

    share: float
    seed: int
    minority_entanglement: float  # entanglement of chain 0's feature
    others_entanglement: float  # mean entanglement of chains 1..N-1
    minority_norm_ratio: float  # |v_0| / mean_j>0 |v_j|
    kl: float  # KL(true chain 0 || model) in nats, late positions
    kl_others: float  # same, mean over chains 1..N-1
    kl_bayes: float  # KL of the Bayes-optimal predictor on chain 0 (the floor for `kl`)
    entanglements: list[float]  # per chain
    norms: list[float]  # per chain feature norm
    final_loss: float  # mean training CE over the last 50 steps (nats)
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


def train_toy(cfg: ToyConfig, share: float, seed: int) -> ToyRunResult:
    """Train one model with minority share `share` and measure its chain features."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    world_rng, data_rng, eval_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    world = make_world(cfg, world_rng)
    train_seqs = torch.from_numpy(sample_sequences(world, training_chains(cfg, share, data_rng), cfg.seq_len, data_rng))

    model = ToyTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps, final=0.0))
    losses = []
    for step in range(cfg.steps):
        batch = train_seqs[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.n_states), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())

    # Balanced held-out set: every chain weighs the same in the token means and directions.
    eval_chains = np.repeat(np.arange(cfg.n_chains), cfg.eval_per_chain)
    eval_seqs = sample_sequences(world, eval_chains, cfg.seq_len, eval_rng)
    with torch.no_grad():
        logits, z = model(torch.from_numpy(eval_seqs))
    V = feature_directions(z.numpy(), eval_seqs, eval_chains, cfg.late_from)
    ent, norms = entanglement(V), np.linalg.norm(V, axis=1)

    late = slice(cfg.late_from, None)
    kl = kl_to_truth(torch.log_softmax(logits, -1).numpy()[:, late], world, eval_seqs[:, late], eval_chains)
    prior = chain_counts(cfg.steps * cfg.batch_size, share, cfg.n_chains) / (cfg.steps * cfg.batch_size)
    kl_b = kl_to_truth(bayes_logp(world, eval_seqs, prior)[:, late], world, eval_seqs[:, late], eval_chains)
    minority = eval_chains == 0
    return ToyRunResult(
        share=share,
        seed=seed,
        minority_entanglement=float(ent[0]),
        others_entanglement=float(ent[1:].mean()),
        minority_norm_ratio=float(norms[0] / norms[1:].mean()),
        kl=float(kl[minority].mean()),
        kl_others=float(kl[~minority].mean()),
        kl_bayes=float(kl_b[minority].mean()),
        entanglements=ent.tolist(),
        norms=norms.tolist(),
        final_loss=float(np.mean(losses[-50:])),
        seconds=time.perf_counter() - start,
    )
