"""The language-model loss of pre-training without ever holding fp32 logits of the whole micro-batch.

A fused output layer and cross-entropy over chunks of the sequence (as Liger-Kernel's fused linear
cross-entropy): each chunk's logits are made in fp32, reduced to its loss, turned at once into that
chunk's gradients (of the hidden states, and added into the output matrix's), and dropped. The largest
temporary is one chunk's logits (rows × chunk × vocabulary), not the micro-batch's (at 4 × 4096 tokens
and OLMo's 50 304 logits: 3.3 GB in fp32, plus the log-softmax's copy and the gradient's), and no
matmul is repeated: three per chunk, as the unchunked forward and backward. The price: the gradients
are made in the forward pass, so this is for training (the loss of an evaluation needs no chunking).
Per-token weights (method=loss_mask: no loss on toxic spans, or the unlikelihood loss on them) in both
paths. Optional z-loss (PaLM; OLMo-core): `z_loss` × mean(logsumexp(logits)²), keeping the softmax
normaliser near 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, z_loss: float, ce_weights=None, ul_weights=None):
        # the normalisers: every token, or (method=loss_mask) the loss-weighted ones and the unlikelihood ones
        tokens = targets.numel() if ce_weights is None else ce_weights.sum().clamp(min=1.0)
        unlikely_tokens = None if ul_weights is None else (ul_weights > 0).sum()
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        z_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        ul_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[1], chunk):
            h = hidden[:, start:start + chunk].flatten(0, 1)
            y = targets[:, start:start + chunk].flatten()
            rows = torch.arange(len(y), device=y.device)
            logits = h @ weight.T  # in the compute dtype: bf16 under autocast or FSDP's bf16 parameters
            compute_dtype, logits = logits.dtype, logits.float()
            lse = torch.logsumexp(logits, dim=-1)
            if ce_weights is None:
                ce_sum += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
                # d/dlogits of (sum CE + z_loss sum lse^2) / tokens: softmax - onehot, plus 2 z lse softmax
                grad = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                if z_loss:
                    z_sum += lse.square().sum()
                    grad.mul_(1 + 2 * z_loss * lse[:, None])
                grad[rows, y] -= 1
                grad.div_(tokens)
            else:
                w = ce_weights[:, start:start + chunk].flatten().float()
                u = ul_weights[:, start:start + chunk].flatten().float()
                ce_sum += (w * (lse - logits.gather(1, y[:, None]).squeeze(1))).sum()
                grad = torch.exp(logits.sub_(lse[:, None]))  # softmax p
                scale = w / tokens * (1 + 2 * z_loss * lse) if z_loss else w / tokens
                at_target = -w / tokens
                if z_loss:
                    z_sum += (w * lse.square()).sum()
                if unlikely_tokens:  # -log(1 - p_y): d/dlogits = p_y / (1 - p_y) (onehot - p); none where clamped
                    p_y = grad[rows, y]
                    ul_sum += (u * -torch.log1p(-p_y.clamp(max=1 - 1e-6))).sum()
                    r = torch.where(p_y < 1 - 1e-6, p_y / (1 - p_y), torch.zeros_like(p_y)) * u / unlikely_tokens
                    scale, at_target = scale - r, at_target + r
                grad.mul_(scale[:, None])
                grad[rows, y] += at_target
            low = grad.to(compute_dtype)  # the two gradient matmuls run in the compute dtype, as unchunked
            grad_hidden[:, start:start + chunk] = (low @ weight).view_as(hidden[:, start:start + chunk])
            if compute_dtype == torch.float32:
                grad_weight.addmm_(grad.T, h)
            else:  # summed over the chunks in fp32
                grad_weight += low.T @ h
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        ce = ce_sum / tokens
        ctx.mark_non_differentiable(ce)
        loss = ce + z_loss * z_sum / tokens
        if unlikely_tokens:
            loss = loss + ul_sum / unlikely_tokens
        return loss, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None, None


def lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 0,
            z_loss: float = 0.0, weights: tuple[torch.Tensor, torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, the loss to train on: that plus z_loss × mean squared log-normaliser) of the
    next tokens `targets` (rows, seq) given the final hidden states `hidden` (rows, seq, d) and the
    output matrix `weight` (vocab, d). Only the second carries gradients when chunked.

    chunk: sequence positions per chunk (0, or one at least as long as the sequence: all at once, as
    `F.cross_entropy` over full fp32 logits, bit for bit).
    weights: (loss weights, unlikelihood weights), each like `targets` (method=loss_mask): the
    cross-entropy is the loss-weighted mean, plus the sum of unlikelihood weight x -log(1 - p(target))
    over the unlikelihood-weighted positions' count (Welleck et al. 2020), chunked or not."""
    if 0 < chunk < hidden.shape[1]:
        loss, ce = _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk, z_loss, *(weights or ()))
        return ce, loss
    if weights is not None:
        return _weighted_loss(hidden, weight, targets, z_loss, *weights)
    logits = F.linear(hidden, weight).flatten(0, 1).float()
    ce = F.cross_entropy(logits, targets.flatten())
    if not z_loss:
        return ce, ce
    return ce, ce + z_loss * torch.logsumexp(logits, dim=-1).square().mean()


def _weighted_loss(hidden, weight, targets, z_loss: float, ce_weights: torch.Tensor, ul_weights: torch.Tensor):
    logits = F.linear(hidden, weight).flatten(0, 1).float()
    log_p = torch.log_softmax(logits, dim=-1).gather(1, targets.flatten()[:, None]).squeeze(1)
    w, u = ce_weights.flatten().float(), ul_weights.flatten().float()
    ce = -(w * log_p).sum() / w.sum().clamp(min=1.0)
    loss = ce
    if u.any():  # -log(1 - p), p kept below 1 so a certain prediction costs a large finite amount
        unlikely = -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
        loss = loss + (u * unlikely).sum() / (u > 0).sum()
    if z_loss:
        loss = loss + z_loss * (w * torch.logsumexp(logits, dim=-1).square()).sum() / w.sum().clamp(min=1.0)
    return ce, loss
