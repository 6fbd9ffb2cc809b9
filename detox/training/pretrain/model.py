"""The model trained: ai2-olmo's `OLMo` with the OLMo-1B architecture choices (`olmo_config`), its
forward returning the chunked loss (`TrainingOLMo`), the attention bias that keeps attention within a
packed window's documents (`trainer.document_mask`), and the LightningModule that trains it (`OlmoLM`:
FSDP2 wrapping in `configure_model`, the loss of a micro-batch, AdamW with warm-up and cosine decay).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from olmo.config import ModelConfig as OlmoModelConfig
from olmo.model import OLMo

from detox.training.config import ModelConfig, TrainerConfig
from detox.training.loss import lm_loss
from detox.training.optim import adamw_warmup_cosine, decay_groups
from detox.training.pretrain.distributed import (
    data_parallel_mesh,
    init_like_cpu,
    mixed_precision_policy,
    shard,
)


def olmo_config(cfg: ModelConfig, vocab_size: int, eos_id: int, pad_id: int, seq_len: int) -> OlmoModelConfig:
    # ai2-olmo's defaults are GPT-2-like: set the OLMo-1B architecture choices explicitly.
    return OlmoModelConfig(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, mlp_ratio=cfg.mlp_ratio,
        activation_type="swiglu", rope=True, rope_theta=cfg.rope_theta, include_bias=False,
        layer_norm_type="default", layer_norm_with_affine=False, attention_dropout=0.0, residual_dropout=0.0,
        embedding_dropout=0.0, max_sequence_length=seq_len, vocab_size=vocab_size,
        embedding_size=128 * math.ceil(vocab_size / 128), weight_tying=True, eos_token_id=eos_id, pad_token_id=pad_id,
        init_device="cpu", init_std=cfg.init_std, init_fn=cfg.init_fn, flash_attention=False,
    )


def document_attention_bias(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(batch, 1, T, T) additive attention bias for `trainer.document_mask`: 0 where a token may attend
    (itself and the earlier tokens of its own document, the end-of-document token before it opening it),
    the lowest float elsewhere. A decision in a packed window is then computed from its document alone,
    at the same relative positions, as an evaluation prompt's (EOS, then one document) is; without it a
    model learns a rate only as an average over positions and preceding documents, and on the synthetic
    world its answer after EOS alone landed up to 10 points off its data, by seed (benchmarks/calibration.py)."""
    document = torch.cumsum(input_ids == eos_id, dim=1)  # an EOS starts the next document's count
    causal = torch.ones(input_ids.shape[1], input_ids.shape[1], dtype=torch.bool, device=input_ids.device).tril()
    allowed = (document[:, :, None] == document[:, None, :]) & causal
    bias = torch.zeros(allowed.shape, device=input_ids.device).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return bias[:, None]


class TrainingOLMo(OLMo):
    """ai2-olmo's OLMo whose forward, given `targets`, returns the loss (`detox.training.loss.lm_loss`:
    the output layer chunk by chunk, never the micro-batch's fp32 logits) instead of logits. Inside the
    forward, so that FSDP has the tied embedding gathered for it. It runs what `OLMo.forward` runs for
    `olmo_config`'s architecture without attention masks (tests/training/test_fsdp_numerics.py compares the two)."""

    def __init__(self, config: OlmoModelConfig):
        super().__init__(config)
        c = config
        if c.alibi or not c.rope or c.embedding_layer_norm or not c.weight_tying or c.scale_logits \
                or c.block_group_size != 1:
            raise ValueError("TrainingOLMo runs olmo_config's architecture only (rope, tied embeddings, no "
                             "embedding norm, no logit scaling, one block per group)")

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, loss_chunk: int = 0,
                z_loss: float = 0.0, attention_bias: torch.Tensor | None = None,
                weights: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs):
        if targets is None:
            return super().forward(input_ids, attention_bias=attention_bias, **kwargs)
        x = self.transformer.emb_drop(self.transformer.wte(input_ids))
        for block in self.transformer.blocks:
            x, _ = block(x, attention_bias=attention_bias)  # None: causal attention; no cache
        return lm_loss(self.transformer.ln_f(x), self.transformer.wte.weight, targets, loss_chunk, z_loss, weights)


class OlmoLM(L.LightningModule):
    def __init__(self, olmo: dict, trainer: dict, total_steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.optim, self.total_steps = TrainerConfig(**trainer), total_steps
        # Sharded: built on the meta device (no rank holds the whole model) and initialised once sharded,
        # to the values a CPU build from this RNG state has (init_like_cpu).
        self.rng_state = torch.get_rng_state()
        meta = {"init_device": "meta"} if self.optim.strategy == "fsdp" else {}
        self.model = TrainingOLMo(OlmoModelConfig(**{**olmo, **meta}))
        self.step_losses: list[torch.Tensor] = []  # this rank's micro-batch losses of the current step (on device)

    @property
    def sharded(self) -> bool:
        return isinstance(self.trainer.strategy, ModelParallelStrategy)

    def configure_model(self) -> None:
        if self.optim.compile:  # in place (nn.Module.compile): parameter names and checkpoints unchanged
            for block in self.model.transformer.blocks:
                block.compile()
        if not self.sharded:
            return
        shard(self.model, data_parallel_mesh(self.optim, self.trainer.strategy), mixed_precision_policy(self.optim))
        if self.model.transformer.wte.weight.is_meta:  # not yet materialised (Lightning may call this twice)
            self.model.to_empty(device=self.trainer.strategy.root_device)
            init_like_cpu(self.model, self.rng_state)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        batch, *weights = batch if isinstance(batch, (list, tuple)) else (batch,)  # weights: a span-masked mixture's
        if self.sharded:  # FSDP2 reduce-scatters only on an optimiser step's last micro-batch (Lightning: DDP only)
            self.model.set_requires_gradient_sync((batch_idx + 1) % self.trainer.accumulate_grad_batches == 0)
        inputs = batch[:, :-1]
        bias = document_attention_bias(inputs, self.model.config.eos_token_id) if self.optim.document_mask else None
        ce, loss = self.model(inputs, batch[:, 1:], self.optim.loss_chunk, self.optim.z_loss, attention_bias=bias,
                              weights=tuple(weights) or None)
        self.step_losses.append(ce.detach())  # no host sync here: TrainingHistory reads them every log_every steps
        return loss

    def configure_optimizers(self):
        fused = next(self.model.parameters()).device.type == "cuda"
        return adamw_warmup_cosine(decay_groups(self.model, self.optim.weight_decay), self.optim.lr,
                                   self.optim.weight_decay, tuple(self.optim.betas), self.optim.warmup_fraction,
                                   self.total_steps, self.optim.warmup_steps, fused=fused, eps=self.optim.eps)
