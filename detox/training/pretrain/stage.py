"""The pre-training stage itself: check the trainer settings against this machine, build the Lightning
trainer from the pieces of this package, train (resuming from the last whole checkpoint a killed run
left), and write the artifact: the transformers model, the loss curve and the other per-step histories.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from detox.core.artifacts import HF_MODEL, HISTORIES, LOSS_CURVE
from detox.core.progress import on_terminal
from detox.core.ranks import lightning_environments, local_rank
from detox.core.schedule import BatchLayout
from detox.core.schema import ConfigError
from detox.core.shards import open_mixture
from detox.core.tokens import EOS, PAD, load_tokenizer
from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain.callbacks import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    Snapshots,
    snapshot_steps,
    AtomicCheckpoints,
    TrainingHistory,
    WeightEMA,
    checkpoint_step,
    flops_per_token,
    peak_flops,
)
from detox.training.pretrain.distributed import (
    full_state_dict,
    lightning_precision,
    lightning_strategy,
)
from detox.training.pretrain.export import export_hf
from detox.training.pretrain.loader import DataPosition, TokenWindows, WindowData
from detox.training.pretrain.model import OlmoLM, olmo_config

# Lightning's start-up banner (accelerator lines, tips) says nothing a detox user needs.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


def check_trainer(trainer_cfg: TrainerConfig, model_cfg: ModelConfig, seq_len: int) -> None:
    """Raise ConfigError (one line naming the key) for trainer settings that cannot run on this machine:
    the devices this machine has (which needs torch, so it waits for the job to start), then the
    checks of the config itself (`TrainerConfig.check`, also run when a job's config is validated)."""
    available = torch.cuda.device_count() if trainer_cfg.accelerator == "gpu" else os.cpu_count() or 1
    if trainer_cfg.devices > available:
        unit = "GPU(s)" if trainer_cfg.accelerator == "gpu" else "CPU core(s)"
        raise ConfigError(f"trainer.devices={trainer_cfg.devices}: this machine has {available} {unit}")
    trainer_cfg.check(seq_len)
    if model_cfg.d_model % model_cfg.n_heads:
        raise ConfigError(f"model.d_model={model_cfg.d_model} is not divisible by n_heads={model_cfg.n_heads}")


def pretrain(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, seq_len: int, seed: int,
             mixture: Path, tokenizer_dir: Path, out: Path, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Train on the packed mixture, resuming from `out/checkpoints/last.ckpt` if a killed run left one;
    write the transformers model and tokenizer to `out/hf`, the loss curve and the other histories to
    `out` and return the training metrics. Every process of a multi-device run calls this (Lightning
    starts them); only rank 0 writes. `callbacks` go to the Lightning trainer (tests, profiling)."""
    if trainer_cfg.deterministic and trainer_cfg.accelerator == "gpu":
        # cuBLAS reads its workspace setting once, at its first use in the process: set it before any
        # CUDA work (Lightning sets it too, but only once the Trainer is built). A user's value stands.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    check_trainer(trainer_cfg, model_cfg, seq_len)
    if trainer_cfg.accelerator == "gpu" and torch.cuda.is_available():
        # this rank's GPU before anything touches CUDA: ai2-olmo builds its RoPE tables on "cuda" (the current
        # device) while the model is made, before Lightning sets the device, so every rank would open a
        # context on GPU 0
        torch.cuda.set_device(local_rank())
    if trainer_cfg.num_threads:
        torch.set_num_threads(trainer_cfg.num_threads)
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(tokenizer_dir)
    windows = TokenWindows(open_mixture(mixture), seq_len)
    layout = BatchLayout.of(trainer_cfg, seq_len)
    steps_per_epoch = len(windows) // layout.global_sequences
    if steps_per_epoch == 0:
        raise ValueError(f"the mixture in {mixture} holds {len(windows)} sequences of {seq_len} tokens, fewer than "
                         f"one global batch of {layout.global_sequences} (trainer.global_batch_tokens="
                         f"{trainer_cfg.global_batch_tokens})")
    total_steps = layout.steps(len(windows), trainer_cfg.epochs)
    config = olmo_config(model_cfg, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS),
                         tokenizer.token_to_id(PAD), seq_len)
    # Plain JSON values in the checkpoint's hparams, so that it loads with torch.load(weights_only=True).
    module = OlmoLM(json.loads(json.dumps(config.asdict())), json.loads(json.dumps(vars(trainer_cfg))), total_steps)
    n_params = sum(p.numel() for p in module.model.parameters())  # counted before sharding
    on_gpu = trainer_cfg.accelerator == "gpu" and torch.cuda.is_available()
    peak = peak_flops(torch.cuda.get_device_name()) if on_gpu else None
    history = TrainingHistory(trainer_cfg.global_batch_tokens, flops_per_token(n_params, model_cfg, seq_len),
                              peak * layout.ranks if peak else None, trainer_cfg.log_every, trainer_cfg.checkpoint_every)
    checkpoints = out / CHECKPOINT_DIR
    resume = checkpoints / LAST_CHECKPOINT  # a symlink to the last whole checkpoint (AtomicCheckpoints)
    was_deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
    trainer = L.Trainer(
        max_steps=total_steps, accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices,
        num_nodes=trainer_cfg.num_nodes, strategy=lightning_strategy(trainer_cfg),
        precision=lightning_precision(trainer_cfg),
        gradient_clip_val=trainer_cfg.grad_clip, accumulate_grad_batches=layout.accumulation,
        use_distributed_sampler=False,  # ResumableBatchSampler shards the data itself, in a fixed order
        logger=False, enable_model_summary=False, enable_progress_bar=on_terminal(), default_root_dir=out, num_sanity_val_steps=0,
        deterministic=trainer_cfg.deterministic,  # torch.use_deterministic_algorithms, for the process
        callbacks=[AtomicCheckpoints(checkpoints, trainer_cfg.checkpoint_every, trainer_cfg.checkpoint_minutes), DataPosition(), history,
                   *([WeightEMA(trainer_cfg.ema_decay)] if trainer_cfg.ema_decay else []),
                   *([Snapshots(snapshot_steps(total_steps, trainer_cfg.snapshots), tokenizer_dir, out,
                                trainer_cfg.global_batch_tokens)] if trainer_cfg.snapshots else []), *callbacks],
        plugins=lightning_environments(),  # in a salloc shell or sbatch script the ranks are not SLURM's tasks
    )
    resumed_from = checkpoint_step(resume) if resume.exists() else 0
    if resumed_from:
        log.info(f"resuming pre-training from step {resumed_from} of {total_steps} ({resume})")
    try:
        trainer.fit(module, datamodule=WindowData(windows, layout, seed, trainer_cfg.loader_workers),
                    ckpt_path=resume if resume.exists() else None, weights_only=True)
    finally:  # the flag is global: the stages after this one in the process keep their own setting
        torch.use_deterministic_algorithms(was_deterministic[0], warn_only=was_deterministic[1])
    state = full_state_dict(module.model, trainer)
    if trainer.is_global_zero:
        export_hf(module.model, tokenizer_dir, out / HF_MODEL, state)
        (out / LOSS_CURVE).write_text(json.dumps(history.loss))
        (out / HISTORIES).write_text(json.dumps(history.histories))
        if checkpoints.exists():  # none when the run was shorter than trainer.checkpoint_every
            shutil.rmtree(checkpoints)  # the exported model is the artifact; checkpoints only served resuming
    trainer.strategy.barrier()  # no rank returns before the artifact is whole
    losses = [loss for _, loss in history.loss]
    return {
        "pretrain_steps": total_steps,
        "pretrain_resumed_from_step": resumed_from,
        "pretrain_final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "pretrain_tokens_seen": total_steps * trainer_cfg.global_batch_tokens,
        "pretrain_gradient_accumulation": layout.accumulation,
        "model_parameters": n_params,
    }


def load_histories(artifact: Path) -> dict[str, list[tuple[int, float]]]:
    """Every per-step history of a pre-training artifact (for MLflow): the loss and the throughput ones."""
    return {"pretrain_loss": json.loads((artifact / LOSS_CURVE).read_text()),
            **json.loads((artifact / HISTORIES).read_text())}
