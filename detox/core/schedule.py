"""The learning-rate schedule every training loop here uses (pre-training, post-training, the toy)."""

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final: float = 0.1) -> float:
    """Multiplier of the peak learning rate at `step`: linear warm-up over `warmup_steps`, then cosine
    decay to `final` at `total_steps` (OLMo decays to 10 % of the peak)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_length(warmup_steps: int, warmup_fraction: float, total_steps: int) -> int:
    """The steps of linear warm-up: `warmup_steps` when set, else `warmup_fraction` of the steps (at least one)."""
    return warmup_steps or max(1, round(warmup_fraction * total_steps))
