"""The optimiser every training stage uses (pre-training and post-training)."""

from __future__ import annotations

import torch

from detox.core.schedule import warmup_cosine, warmup_length


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups as OLMo-core's: weight decay on the matrices of linear layers only, none on
    embeddings (an output projection tied to them included) and on norms and biases."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) or "Norm" in type(m).__name__
                for p in m.parameters(recurse=False)}
    params = list(model.parameters())
    no_decay |= {id(p) for p in params if p.ndim < 2}  # biases
    return [{"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]


def adamw_warmup_cosine(parameters, lr: float, weight_decay: float, betas: tuple[float, float],
                        warmup_fraction: float, total_steps: int, warmup_steps: int = 0, fused: bool = False,
                        eps: float = 1e-8) -> dict:
    """AdamW with linear warm-up over `warmup_steps` (when set) or `warmup_fraction` of the steps, then
    cosine decay to 10 % (as OLMo), stepped per optimiser step, in Lightning's `configure_optimizers` form.
    `parameters` may be groups (`decay_groups`); `fused`: torch's one-kernel AdamW (GPUs); `eps`: AdamW's."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                  fused=fused or None)
    warmup = warmup_length(warmup_steps, warmup_fraction, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
