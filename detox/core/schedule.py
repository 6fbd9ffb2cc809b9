"""The learning-rate schedule every training loop here uses (pre-training, post-training, the toy), and
how pre-training cuts its global batch up (read by the pretrain stage and by plan mode, which must not
import torch)."""

import math
from dataclasses import dataclass


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


@dataclass
class BatchLayout:
    """How one optimiser step's global batch is cut up across devices and forward passes."""

    seq_len: int  # tokens per sequence
    global_sequences: int  # sequences per optimiser step over all devices
    micro_batch_size: int  # sequences per device per forward pass
    ranks: int  # devices over all nodes

    @classmethod
    def of(cls, cfg, seq_len: int) -> "BatchLayout":
        """The layout of a `detox.training.config.TrainerConfig`."""
        return cls(seq_len, cfg.global_batch_tokens // seq_len, cfg.micro_batch_size, cfg.devices * cfg.num_nodes)

    @property
    def accumulation(self) -> int:
        return self.global_sequences // (self.micro_batch_size * self.ranks)

    def steps(self, windows: int, epochs: float) -> int:
        """Optimiser steps over `windows` sequences in `epochs` passes (each pass drops its incomplete last batch)."""
        return math.ceil(epochs * (windows // self.global_sequences))
