"""Toy superposition experiment (paper section "toy"; DESIGN.md stage 7).

N Markov chains live on one shared state space. Chain 0, the *minority*, gets a small share of the
training sequences; the other N-1 chains split the rest equally. A small 4-layer Transformer with a
`latent_dim`-d bottleneck before its readout is trained to predict the next state. Because the chain
is never given, the model must infer it from the sequence and carry that belief in the bottleneck,
where N chain features compete for M < N dimensions (superposition).

Question (paper): as the minority's share grows, does its feature direction become less entangled
with the others (max |cos| falls towards the others' mean)?

World (chosen to avoid the trap DESIGN.md records: deterministic permutation chains let one
(previous, current) pair identify the chain, so the model learns a lookup and keeps no chain feature):
  * one shared random cycle over the `n_states` states; from state x the walker moves 1..`max_step`
    steps along it, so every chain allows exactly the same transitions;
  * chain c prefers its own group of `n_states / n_chains` states: P(y | x, c) ∝ exp(beta·[y ∈ g_c]),
    so the chain can only be inferred from evidence accumulated over the sequence.

Pipeline: make_world -> sample_sequences -> ToyTransformer (train_toy) -> feature_directions ->
entanglement / norm ratio / KL; run_toy_curve sweeps shares × seeds; plot_toy_curve draws it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn


@dataclass
class ToyConfig:
    # --- world ---
    n_chains: int = 6
    """N, number of Markov chains (features). 6 > latent_dim forces superposition (DESIGN's best)."""
    n_states: int = 18
    """Size of the shared state space; must be a multiple of n_chains (each chain prefers n_states/N)."""
    max_step: int = 3
    """The walker moves 1..max_step steps along the shared cycle, so each state has max_step successors."""
    beta: float = 3.0
    """Preference strength (nats): P(y | x, c) ∝ exp(beta·[y in chain c's group]). DESIGN used 3."""
    minority_overlap: int = 0
    """How many of the minority chain's preferred states it shares with chain 1's group (0 = none,
    DESIGN's design). > 0 gives the minority a close majority neighbour it could collapse onto; the
    states it gives up are then preferred by no chain."""
    seq_len: int = 24
    """Tokens per sequence: long enough to infer the chain from accumulated evidence (DESIGN: 24)."""
    shares: list[float] = field(default_factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    """Minority shares of the training sequences (fractions). The uniform share 1/N is always run too
    (it is each seed's paired baseline), so it need not be listed."""
    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    """Seeds; a seed fixes the world (cycle, groups), the data and the initial weights. Paper: 10."""

    # --- model ---
    d_model: int = 16
    """Residual-stream width. DESIGN: width 4 did not learn the chains in budget, 16 did."""
    n_layers: int = 4
    """Transformer blocks (paper: 4 layers)."""
    n_heads: int = 1
    """Attention heads per block (head dim = d_model / n_heads). 1 head learned the chains as well as
    2 in a 4-seed check and costs 30 % less time a step on CPU."""
    mlp_ratio: int = 2
    """MLP hidden width as a multiple of d_model (2, not the usual 4: cheaper, learned as well)."""
    latent_dim: int = 4
    """M, width of the bottleneck before the readout: the space the chain features must share."""

    # --- training ---
    steps: int = 800
    """Optimiser steps. Sized so the default 10-seed curve fits in 10 minutes on 2 CPU cores; at
    lr 0.06 the uniform-share models then reach late-position KL ≈ 0.07 nats to the true chain
    (chain-agnostic predictor ≈ 0.22, Bayes-optimal ≈ 0.01), i.e. the chains are learned."""
    batch_size: int = 64
    """Sequences per step; fresh sequences every step (no epochs), sampled with exact shares."""
    lr: float = 0.06
    """Peak AdamW learning rate (linear warm-up, cosine decay to 0). Chosen on the uniform run's KL
    (0.01 left the chains barely learned in 800 steps); tiny models take a large lr."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay. 0 so the minority feature's norm is not shrunk by the optimiser itself."""

    # --- measurement ---
    late_from: int = 12
    """First position counted as "late": by then the chain is mostly identifiable from the prefix."""
    eval_per_chain: int = 256
    """Held-out sequences per chain (balanced) for feature directions and KL."""
    random_trials: int = 20000
    """Monte Carlo trials for the random-direction reference level (fixed seed 0)."""
    workers: int = 1
    """Processes for run_toy_curve (each uses 1 torch thread); 1 runs in the calling process."""


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


@dataclass
class ToyCurveResult:
    config: ToyConfig
    rows: list[ToyRunResult]
    summary: dict[str, float]  # flat, MLflow-ready


# ----------------------------------------------------------------------------------------------
# World and data


@dataclass
class World:
    cycle_pos: np.ndarray  # (S,) position of each state on the shared cycle
    groups: np.ndarray  # (N, S/N) preferred states of each chain
    transition: np.ndarray  # (N, S, S) P(next | current, chain)


def make_world(cfg: ToyConfig, rng: np.random.Generator) -> World:
    """Random shared cycle and random partition of the states into the chains' preferred groups
    (chain 0's first `minority_overlap` states replaced by chain 1's)."""
    S, N = cfg.n_states, cfg.n_chains
    assert S % N == 0 and cfg.max_step < S
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


# ----------------------------------------------------------------------------------------------
# Model


class Block(nn.Module):
    """Pre-LayerNorm causal self-attention + MLP block."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return h + self.mlp(self.ln2(h))


class ToyTransformer(nn.Module):
    """Transformer whose only route from context to the logits is a `latent_dim`-d bottleneck z.

    logits = readout(z) + token_logits[current state]. The token table carries what the current
    state alone tells (its successors), so z only has to carry the chain: that is where the N chain
    features have to share M dimensions.
    """

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        S, D = cfg.n_states, cfg.d_model
        self.tok_emb = nn.Embedding(S, D)
        self.pos_emb = nn.Embedding(cfg.seq_len, D)
        self.blocks = nn.ModuleList(Block(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(D)
        self.bottleneck = nn.Linear(D, cfg.latent_dim)
        self.readout = nn.Linear(cfg.latent_dim, S)
        self.token_logits = nn.Embedding(S, S)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T) states -> (logits (B, T, S) for the next state, latent z (B, T, M))."""
        h = self.tok_emb(x) + self.pos_emb(torch.arange(x.shape[1]))
        for block in self.blocks:
            h = block(h)
        z = self.bottleneck(self.ln_f(h))
        return self.readout(z) + self.token_logits(x), z


# ----------------------------------------------------------------------------------------------
# Geometry


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


# ----------------------------------------------------------------------------------------------
# Training and measurement


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
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min((s + 1) / cfg.warmup_steps, 0.5 * (1 + math.cos(math.pi * s / cfg.steps))),
    )
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


# ----------------------------------------------------------------------------------------------
# Sweep


def _one_thread() -> None:
    torch.set_num_threads(1)  # workers share the cores; more threads per tiny model only contend


def _train_job(args: tuple[ToyConfig, float, int]) -> ToyRunResult:
    return train_toy(*args)


def share_key(share: float) -> str:
    return f"{share:.4g}"


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (nan half-width with one seed)."""
    m = float(np.mean(x))
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def summarize(cfg: ToyConfig, rows: list[ToyRunResult]) -> dict[str, float]:
    """Flat metrics: per share mean/95 % CI of minority entanglement, paired difference to the same
    seed's uniform run, others' entanglement, norm ratio, KL; Spearman of entanglement vs share;
    Welch bound and random level."""
    uniform = 1.0 / cfg.n_chains
    base = {r.seed: r.minority_entanglement for r in rows if r.share == uniform}
    out: dict[str, float] = {}
    for share in sorted({r.share for r in rows}):
        rs = [r for r in rows if r.share == share]
        k = share_key(share)
        m, lo, hi = _mean_ci(np.array([r.minority_entanglement for r in rs]))
        out |= {f"minority_entanglement_share_{k}": m, f"minority_entanglement_lo_share_{k}": lo,
                f"minority_entanglement_hi_share_{k}": hi}
        if share != uniform:
            m, lo, hi = _mean_ci(np.array([r.minority_entanglement - base[r.seed] for r in rs]))
            out |= {f"paired_diff_share_{k}": m, f"paired_diff_lo_share_{k}": lo, f"paired_diff_hi_share_{k}": hi}
        for name in ("others_entanglement", "minority_norm_ratio", "kl", "kl_others", "kl_bayes"):
            out[f"{name}_share_{k}"] = float(np.mean([getattr(r, name) for r in rs]))
    shares = [r.share for r in rows]
    rho, p = stats.spearmanr(shares, [r.minority_entanglement for r in rows])
    rho_n, p_n = stats.spearmanr(shares, [r.minority_norm_ratio for r in rows])
    out |= {
        "spearman_rho": float(rho),
        "spearman_p": float(p),
        "norm_spearman_rho": float(rho_n),
        "norm_spearman_p": float(p_n),
        "others_entanglement": float(np.mean([r.others_entanglement for r in rows])),
        "welch_bound": welch_bound(cfg.n_chains, cfg.latent_dim),
        "random_level": random_level(cfg.n_chains, cfg.latent_dim, cfg.random_trials),
    }
    return out


def run_toy_curve(cfg: ToyConfig) -> ToyCurveResult:
    """Train every (share, seed) of (cfg.shares + [1/N]) × cfg.seeds, in cfg.workers processes."""
    shares = sorted(set(cfg.shares) | {1.0 / cfg.n_chains})
    jobs = [(cfg, share, seed) for share in shares for seed in cfg.seeds]
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if cfg.workers > 1:
        # spawn: a fresh interpreter per worker, safe with torch's thread pools (fork is not).
        pool = multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=_one_thread)
        results = pool.imap_unordered(_train_job, jobs)
    else:
        pool, results = None, map(_train_job, jobs)
    if tqdm is not None:
        results = tqdm(results, total=len(jobs), desc="toy runs")
    rows = sorted(results, key=lambda r: (r.share, r.seed))
    if pool is not None:
        pool.close()
        pool.join()
    return ToyCurveResult(cfg, rows, summarize(cfg, rows))


def summary_table(result: ToyCurveResult) -> str:
    """Plain-text table, one line per share."""
    s, uniform = result.summary, 1.0 / result.config.n_chains
    lines = [f"{'share':>7} {'minority ent [95% CI]':>24} {'paired diff [95% CI]':>25} "
             f"{'others':>7} {'norm ratio':>10} {'KL min':>7} {'KL bayes':>8} {'KL oth':>7}"]
    for share in sorted({r.share for r in result.rows}):
        k = share_key(share)
        ent = f"{s[f'minority_entanglement_share_{k}']:.3f} [{s[f'minority_entanglement_lo_share_{k}']:.3f}, " \
              f"{s[f'minority_entanglement_hi_share_{k}']:.3f}]"
        diff = "(baseline)" if share == uniform else \
            f"{s[f'paired_diff_share_{k}']:+.3f} [{s[f'paired_diff_lo_share_{k}']:+.3f}, {s[f'paired_diff_hi_share_{k}']:+.3f}]"
        lines.append(f"{k:>7} {ent:>24} {diff:>25} {s[f'others_entanglement_share_{k}']:7.3f} "
                     f"{s[f'minority_norm_ratio_share_{k}']:10.3f} {s[f'kl_share_{k}']:7.3f} "
                     f"{s[f'kl_bayes_share_{k}']:8.3f} {s[f'kl_others_share_{k}']:7.3f}")
    lines.append(f"Spearman(minority entanglement, share): rho = {s['spearman_rho']:+.3f}, p = {s['spearman_p']:.3g}")
    lines.append(f"Spearman(minority norm ratio, share):   rho = {s['norm_spearman_rho']:+.3f}, p = {s['norm_spearman_p']:.3g}")
    lines.append(f"others' mean entanglement {s['others_entanglement']:.3f}; Welch bound {s['welch_bound']:.3f}; "
                 f"random level {s['random_level']:.3f}")
    return "\n".join(lines)


def plot_toy_curve(result: ToyCurveResult, path: str | os.PathLike) -> None:
    """Two-panel PNG: minority entanglement (mean, 95 % band) vs share with the others' mean, Welch
    bound and random level; and the minority feature's norm relative to the others'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, s = result.config, result.summary
    shares = sorted({r.share for r in result.rows})
    keys = [share_key(x) for x in shares]
    mean = [s[f"minority_entanglement_share_{k}"] for k in keys]
    lo = [s[f"minority_entanglement_lo_share_{k}"] for k in keys]
    hi = [s[f"minority_entanglement_hi_share_{k}"] for k in keys]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(shares, mean, "o-", color="C3", label="minority chain")
    ax1.fill_between(shares, lo, hi, color="C3", alpha=0.2, label="95 % interval")
    ax1.plot(shares, [s[f"others_entanglement_share_{k}"] for k in keys], "s--", color="C0", label="other chains (mean)")
    ax1.axhline(s["random_level"], color="grey", ls=":", label=f"random directions ({s['random_level']:.2f})")
    ax1.axhline(s["welch_bound"], color="k", ls="-.", label=f"Welch bound ({s['welch_bound']:.2f})")
    ax1.set(xscale="log", xlabel="minority share of training sequences", ylabel="entanglement (max |cos|)",
            title=f"Spearman rho = {s['spearman_rho']:+.2f} (p = {s['spearman_p']:.2g})")
    ax1.legend(fontsize=8)
    for r in result.rows:  # individual runs, to show the spread
        ax2.plot(r.share, r.minority_norm_ratio, ".", color="C2", alpha=0.4)
    ax2.plot(shares, [s[f"minority_norm_ratio_share_{k}"] for k in keys], "o-", color="C2")
    ax2.set(xscale="log", xlabel="minority share of training sequences",
            ylabel="minority feature norm / others' mean", title="minority feature norm")
    fig.suptitle(f"Toy superposition: N = {cfg.n_chains} chains, M = {cfg.latent_dim} latent dims, "
                 f"{len(cfg.seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
