"""The optimiser every training stage uses (pre-training and post-training)."""

from __future__ import annotations

import torch

from detox.core.schedule import warmup_cosine


def adamw_warmup_cosine(parameters, lr: float, weight_decay: float, betas: tuple[float, float],
                        warmup_fraction: float, total_steps: int) -> dict:
    """AdamW with linear warm-up over `warmup_fraction` of the steps, then cosine decay to 10 % (as
    OLMo), stepped per optimiser step, in Lightning's `configure_optimizers` form."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=betas)
    warmup = max(1, round(warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
