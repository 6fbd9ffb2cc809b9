"""Pre-training stage: ai2-olmo's `OLMo` inside a LightningModule, resumable, exported to
transformers' `OlmoForCausalLM` (identical logits) for the stages after it.

ai2-olmo's own `hf_olmo` converter writes a format that transformers 5 no longer loads, so the
export below maps the weights onto the native transformers Olmo by hand.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from olmo.config import ModelConfig as OlmoModelConfig
from olmo.model import OLMo
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from detox.artifacts import HF_MODEL, LOSS_CURVE, MIXTURE
from detox.config import ModelConfig, TrainerConfig
from detox.data import EOS, PAD, load_tokenizer
from detox.progress import on_terminal
from detox.schedule import warmup_cosine


# Lightning's start-up banner (accelerator lines, tips) says nothing a detox user needs.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


def olmo_config(cfg: ModelConfig, vocab_size: int, eos_id: int, pad_id: int, seq_len: int) -> OlmoModelConfig:
    # ai2-olmo's defaults are GPT-2-like: set the OLMo-1B architecture choices explicitly.
    return OlmoModelConfig(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, mlp_ratio=cfg.mlp_ratio,
        activation_type="swiglu", rope=True, include_bias=False, layer_norm_type="default",
        layer_norm_with_affine=False, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        max_sequence_length=seq_len, vocab_size=vocab_size, embedding_size=128 * math.ceil(vocab_size / 128),
        weight_tying=True, eos_token_id=eos_id, pad_token_id=pad_id, init_device="cpu", init_std=cfg.init_std,
        flash_attention=False,
    )


class TokenWindows(torch.utils.data.Dataset):
    """Consecutive windows of `seq_len + 1` tokens from the packed mixture (inputs and shifted targets)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, i: int) -> torch.Tensor:
        start = i * self.seq_len
        return torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))


class OlmoLM(L.LightningModule):
    def __init__(self, olmo: dict, trainer: dict, total_steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.model = OLMo(OlmoModelConfig(**olmo))
        self.optim, self.total_steps = TrainerConfig(**trainer), total_steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss is {loss.item()} at step {self.global_step}; "
                                     "lower trainer.lr or check the data")
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.parameters(), self.optim.lr, self.optim.weight_decay, tuple(self.optim.betas),
                                   self.optim.warmup_fraction, self.total_steps)


def adamw_warmup_cosine(parameters, lr: float, weight_decay: float, betas: tuple[float, float],
                        warmup_fraction: float, total_steps: int) -> dict:
    """AdamW with linear warm-up over `warmup_fraction` of the steps, then cosine decay to 10 % (as
    OLMo), stepped per optimiser step, in Lightning's `configure_optimizers` form (shared by
    pre-training and post-training)."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=betas)
    warmup = max(1, round(warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class LossHistory(L.Callback):
    """Keeps (step, loss) pairs so the curve can be logged to MLflow after training."""

    def __init__(self):
        self.points: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.points.append((trainer.global_step, float(outputs["loss"])))


def pretrain(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, seq_len: int, seed: int,
             mixture: Path, tokenizer_dir: Path, out: Path) -> dict:
    """Train on the packed mixture, resuming from `out/checkpoints/last.ckpt` if a killed run left one;
    write the transformers model and tokenizer to `out/<HF_MODEL>` and return the training metrics."""
    if trainer_cfg.num_threads:
        torch.set_num_threads(trainer_cfg.num_threads)
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(tokenizer_dir)
    windows = TokenWindows(np.load(mixture / MIXTURE), seq_len)
    if len(windows) == 0:
        raise ValueError(f"the mixture in {mixture} is shorter than one sequence of {seq_len} tokens")
    loader = torch.utils.data.DataLoader(windows, batch_size=trainer_cfg.batch_size, shuffle=True, drop_last=False,
                                         generator=torch.Generator().manual_seed(seed))
    total_steps = math.ceil(trainer_cfg.epochs * len(loader))
    config = olmo_config(model_cfg, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS),
                         tokenizer.token_to_id(PAD), seq_len)
    # Plain JSON values in the checkpoint's hparams, so that it loads with torch.load(weights_only=True).
    module = OlmoLM(json.loads(json.dumps(config.asdict())), json.loads(json.dumps(vars(trainer_cfg))), total_steps)
    checkpoints = out / "checkpoints"
    resume = checkpoints / "last.ckpt"
    history = LossHistory()
    trainer = L.Trainer(
        max_steps=total_steps, accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices,
        precision=trainer_cfg.precision, gradient_clip_val=trainer_cfg.grad_clip, logger=False,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0,
                                   every_n_train_steps=trainer_cfg.checkpoint_every), history],
        enable_model_summary=False, enable_progress_bar=on_terminal(), default_root_dir=out, num_sanity_val_steps=0,
    )
    # mmap: only the step is read here; Lightning loads the checkpoint itself in fit().
    resumed_from = torch.load(resume, weights_only=True, mmap=True)["global_step"] if resume.exists() else 0
    if resumed_from:
        log.info(f"resuming pre-training from step {resumed_from} of {total_steps} ({resume})")
    trainer.fit(module, loader, ckpt_path=resume if resume.exists() else None, weights_only=True)
    export_hf(module.model, tokenizer_dir, out / HF_MODEL)
    shutil.rmtree(checkpoints)  # the exported model is the artifact; checkpoints only served resuming
    losses = [loss for _, loss in history.points]
    metrics = {
        "pretrain_steps": total_steps,
        "pretrain_resumed_from_step": resumed_from,
        "pretrain_final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "pretrain_tokens_seen": total_steps * trainer_cfg.batch_size * seq_len,
        "model_parameters": sum(p.numel() for p in module.model.parameters()),
    }
    (out / LOSS_CURVE).write_text(json.dumps(history.points))
    return metrics


def export_hf(model: OLMo, tokenizer_dir: Path, out: Path) -> OlmoForCausalLM:
    """Write `model` as a transformers `OlmoForCausalLM` (same logits) with its tokenizer to `out`."""
    c = model.config
    hf = OlmoForCausalLM(OlmoConfig(
        vocab_size=c.embedding_size, hidden_size=c.d_model, intermediate_size=c.d_model * c.mlp_ratio // 2,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads,
        max_position_embeddings=c.max_sequence_length, rope_theta=c.rope_theta, attention_bias=False,
        clip_qkv=c.clip_qkv, pad_token_id=c.pad_token_id, eos_token_id=c.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    ))
    state = model.state_dict()
    weights = {"model.embed_tokens.weight": state["transformer.wte.weight"],
               "lm_head.weight": state["transformer.wte.weight"]}
    for i in range(c.n_layers):
        block, layer = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[block + "att_proj.weight"].split(model.transformer.blocks[i].fused_dims, dim=0)
        up, gate = state[block + "ff_proj.weight"].chunk(2, dim=0)  # OLMo's SwiGLU: x, gate = chunk(2)
        weights.update({
            layer + "self_attn.q_proj.weight": q, layer + "self_attn.k_proj.weight": k,
            layer + "self_attn.v_proj.weight": v, layer + "self_attn.o_proj.weight": state[block + "attn_out.weight"],
            layer + "mlp.gate_proj.weight": gate, layer + "mlp.up_proj.weight": up,
            layer + "mlp.down_proj.weight": state[block + "ff_out.weight"],
        })
    hf.load_state_dict(weights, strict=True)
    hf.save_pretrained(out)
    hf_tokenizer(tokenizer_dir).save_pretrained(out)
    return hf


def hf_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(tokenizer_dir), eos_token=EOS, pad_token=PAD)
