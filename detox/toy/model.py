"""The toy Transformer: its features share a `latent_dim`-d bottleneck (soft) or the residual stream (paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detox.toy.config import ToyConfig


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
    """Transformer whose features live in a narrow space z.

    soft: z is a `latent_dim`-d bottleneck and logits = readout(z) + token_logits[current state].
    The token table carries what the current state alone tells (its successors), so z only has to
    carry the chain: that is where the N chain features have to share M dimensions.
    paper: no bottleneck and no bypass; z is the final residual stream itself (d_model-d) and
    logits = readout(ln_f(z)), as in the paper's toy.
    """

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        S, D = cfg.n_states, cfg.d_model
        self.tok_emb = nn.Embedding(S, D)
        self.pos_emb = nn.Embedding(cfg.seq_len, D)
        self.blocks = nn.ModuleList(Block(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(D)
        self.bypass = cfg.design == "soft"
        if self.bypass:  # (modules built in this order so the soft design's initial weights stay as they were)
            self.bottleneck = nn.Linear(D, cfg.latent_dim)
        self.readout = nn.Linear(cfg.feature_dim, S)
        if self.bypass:
            self.token_logits = nn.Embedding(S, S)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T) states -> (logits (B, T, S) for the next state, features' space z (B, T, M))."""
        h = self.tok_emb(x) + self.pos_emb(torch.arange(x.shape[1]))
        for block in self.blocks:
            h = block(h)
        if not self.bypass:
            return self.readout(self.ln_f(h)), h
        z = self.bottleneck(self.ln_f(h))
        return self.readout(z) + self.token_logits(x), z
