"""Pre-training stage: ai2-olmo's `OLMo` inside a LightningModule, exported to transformers'
`OlmoForCausalLM` (identical logits) for the stages after it.

One code path from a CPU to many GPU nodes:

* `trainer.strategy`: `auto` (one device), `ddp` (replicated weights) or `fsdp` (Lightning's
  `ModelParallelStrategy` with `fully_shard` on every OLMo block and the root; gloo on CPUs, NCCL on GPUs).
* The batch is set in tokens (`trainer.global_batch_tokens`); gradient accumulation makes up what
  `micro_batch_size` sequences on each of `devices * num_nodes` devices do not, and every epoch is one
  seeded permutation of the windows cut into global batches, so a run is the same optimisation on 1 or
  16 devices (up to float rounding).
* A killed run resumes exactly: the checkpoint (a file, or a distributed-checkpoint folder when
  sharded) holds the data position, and the sampler continues from it mid-epoch. Each save goes to a
  new step checkpoint, and `last.ckpt` is switched to it atomically only once it is whole
  (`AtomicCheckpoints`), so a kill during a save loses at most the steps since the previous one.
* `trainer.deterministic`: torch's deterministic algorithms (and cuBLAS's fixed workspace on GPUs), so
  that a GPU run, not only a CPU one, repeats bitwise.
* `trainer.document_mask`: attention kept within each document of a packed window (an attention bias
  handed to every block, `document_attention_bias`); `trainer.ema_decay`: the exported model is an
  exponential moving average of the weights (`WeightEMA`, Lightning's EMA weight averaging), which the
  checkpoints hold too, so a resumed run ends with the same average.
* Per optimiser step it records the loss, the learning rate, tokens/s and, on GPUs, the model FLOPs
  utilisation (`HISTORIES`, step -> value), read from the devices every `trainer.log_every` steps.
* Speed as OLMo-core's OLMo-1B recipe: with fsdp, FSDP2's bf16-parameter / fp32-reduction policy, no
  reduce-scatter before an optimiser step's last micro-batch, a meta-device build initialised after
  sharding (`init_like_cpu`), HSDP across nodes (`trainer.hsdp`); per-block `torch.compile`
  (`trainer.compile`); the output layer fused with the loss over sequence chunks (`trainer.loss_chunk`,
  detox.training.loss); fused AdamW on GPUs, never decaying the embeddings.

ai2-olmo's own `hf_olmo` converter writes a format that transformers 5 no longer loads, so the
export below maps the weights onto the native transformers Olmo by hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, EMAWeightAveraging
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from olmo.config import ModelConfig as OlmoModelConfig
from olmo.model import OLMo
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.artifacts import HF_MODEL, HISTORIES, LOSS_CURVE
from detox.core.models import ai2_to_hf_olmo
from detox.core.schema import ConfigError
from detox.training.config import ModelConfig, TrainerConfig
from detox.core.shards import open_mixture
from detox.core.tokens import EOS, PAD, load_tokenizer
from detox.core.progress import on_terminal
from detox.core.ranks import lightning_environments, started_externally
from detox.core.schedule import BatchLayout
from detox.training.loss import lm_loss
from detox.training.optim import adamw_warmup_cosine, decay_groups


# Lightning's start-up banner (accelerator lines, tips) says nothing a detox user needs.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # in the stage's output; removed once the model is exported
# A relative symlink to the newest whole step checkpoint, which is a file (one process, ddp) or a
# distributed-checkpoint folder (fsdp); Lightning and `checkpoint_step` read it as that checkpoint.
LAST_CHECKPOINT = "last.ckpt"
STEP_CHECKPOINT = "step-{:06d}.ckpt"  # one per save, named by the optimiser step
# Dense (no sparsity) bf16 peak FLOP/s of one GPU, matched in order against torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
                   ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12))


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


class TokenWindows(torch.utils.data.Dataset):
    """Consecutive windows of `seq_len + 1` tokens from the packed mixture (inputs and shifted targets)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, i: int) -> torch.Tensor:
        start = i * self.seq_len
        return torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))


class ResumableBatchSampler(torch.utils.data.Sampler):
    """One rank's micro-batches (lists of window indices).

    Every epoch is a permutation of the windows seeded by (seed, epoch), cut into global batches (the
    incomplete last one dropped); rank r takes the r-th slice of each, in micro-batches. The order thus
    depends on neither the number of devices nor a resume. `state_dict` is the position in trained
    micro-batches (kept current by `DataPosition`, since Lightning's fetcher reads one batch ahead).
    """

    def __init__(self, n_windows: int, layout: BatchLayout, rank: int, seed: int):
        self.n_windows, self.layout, self.rank, self.seed = n_windows, layout, rank, seed
        self.steps_per_epoch = n_windows // layout.global_sequences
        self.epoch, self.skip = 0, 0  # skip: micro-batches of `epoch` already trained (set on resume)
        self.trained = (0, 0)  # (epoch, micro-batches of it trained on)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch * self.layout.accumulation

    def __iter__(self):
        skip, self.skip = self.skip, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_windows)
        per_rank, size = self.layout.global_sequences // self.layout.ranks, self.layout.micro_batch_size
        for i in range(skip, len(self)):
            step, micro = divmod(i, self.layout.accumulation)
            first = step * self.layout.global_sequences + self.rank * per_rank + micro * size
            yield order[first:first + size].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.trained[0], "trained": self.trained[1]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.skip = state["epoch"], state["trained"]
        if self.skip == len(self):  # saved at the end of an epoch: continue with the next one
            self.epoch, self.skip = self.epoch + 1, 0


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader that Lightning stores in checkpoints and restores (its resumable-loader protocol)."""

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


class WindowData(L.LightningDataModule):
    """Builds the loader once the trainer knows this process's rank."""

    def __init__(self, windows: TokenWindows, layout: BatchLayout, seed: int, workers: int = 0):
        super().__init__()
        self.windows, self.layout, self.seed, self.workers = windows, layout, seed, workers
        self.sampler: ResumableBatchSampler | None = None

    def train_dataloader(self) -> ResumableLoader:
        if self.trainer.world_size != self.layout.ranks:
            raise RuntimeError(f"{self.trainer.world_size} processes run, but trainer.devices * num_nodes = "
                               f"{self.layout.ranks}")
        self.sampler = ResumableBatchSampler(len(self.windows), self.layout, self.trainer.global_rank, self.seed)
        on_gpu = self.trainer.strategy.root_device.type == "cuda"
        # GPUs only: on CPUs the ranks themselves use the cores, and a process launcher's (loky's) workers
        # cannot start the loader's worker processes (the windows do not pickle there)
        workers = self.workers if on_gpu else 0
        return ResumableLoader(self.windows, batch_sampler=self.sampler, num_workers=workers,
                               pin_memory=on_gpu, persistent_workers=workers > 0)


class DataPosition(L.Callback):
    """Tells the sampler the epoch (Lightning sets it only on plain samplers) and how many micro-batches
    of it have been trained on."""

    def on_train_epoch_start(self, trainer, module):  # runs before the epoch's iterator is created
        trainer.datamodule.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        trainer.datamodule.sampler.trained = (trainer.current_epoch, batch_idx + 1)


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
                z_loss: float = 0.0, attention_bias: torch.Tensor | None = None, **kwargs):
        if targets is None:
            return super().forward(input_ids, attention_bias=attention_bias, **kwargs)
        x = self.transformer.emb_drop(self.transformer.wte(input_ids))
        for block in self.transformer.blocks:
            x, _ = block(x, attention_bias=attention_bias)  # None: causal attention; no cache
        return lm_loss(self.transformer.ln_f(x), self.transformer.wte.weight, targets, loss_chunk, z_loss)


def init_like_cpu(model: OLMo, rng_state: torch.Tensor) -> None:
    """Give `model`, built on the meta device, sharded and materialised (`to_empty`), exactly the values
    `OLMo(config)` built on the CPU from the RNG state `rng_state` has, holding one embedding or block in
    CPU memory at a time, never the whole model. ai2-olmo's construction draws the default
    initialisation of the embedding, then of each block; its `reset_parameters` then draws the values
    kept, in the same order; this replays both with ai2-olmo's own code and copies each rank's shard."""
    from types import SimpleNamespace

    from olmo.model import BufferCache, LayerNorm, OLMoBlock
    from torch.distributed.tensor import DTensor, distribute_tensor

    config = dataclasses.replace(model.config, init_device="cpu")

    def embedding() -> torch.nn.Embedding:
        return torch.nn.Embedding(config.embedding_size or config.vocab_size, config.d_model)

    def quietly_built(build):  # a twin whose construction draws nothing from the RNG stream being replayed
        with torch.random.fork_rng(devices=[]):
            return build()

    def copy_into(target: torch.nn.Module, twin: torch.nn.Module) -> None:
        with torch.no_grad():
            for name, value in twin.named_parameters():
                param = target.get_parameter(name)
                if isinstance(param, DTensor):  # every rank holds the full value: no communication
                    value = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
                    param.to_local().copy_(value.to_local())
                else:
                    param.copy_(value)

    def blocks():  # OLMo.reset_parameters initialises each as it is handed out; copied when it asks for the next
        for i, target in enumerate(model.transformer.blocks):
            twin = quietly_built(lambda: OLMoBlock.build(i, config, BufferCache()))
            yield twin
            copy_into(target, twin)

    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(rng_state)
        embedding()  # the construction's draws
        for i in range(config.n_layers):
            OLMoBlock.build(i, config, BufferCache())
        wte = quietly_built(embedding)
        OLMo.reset_parameters(SimpleNamespace(config=config, transformer=SimpleNamespace(
            wte=wte, ln_f=quietly_built(lambda: LayerNorm.build(config)), blocks=blocks())))
        copy_into(model.transformer.wte, wte)


def mixed_precision_policy(cfg: TrainerConfig):
    """FSDP2's bf16 parameters and fp32 gradient reduction for precision=bf16-mixed (OLMo-core, torchtitan):
    all-gathers and reduce-scatters in half the bytes of fp32, without Lightning's autocast on top."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if cfg.precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: OLMo, mesh, policy) -> None:
    """FSDP2 on every block, then on the root (the rest: the embedding, tied to the output layer)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.blocks:  # one all-gather per block keeps peak memory at one block
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def lightning_precision(cfg: TrainerConfig) -> str:
    """Lightning's precision: with fsdp, bf16 is FSDP2's mixed-precision policy, not Lightning's autocast."""
    return "32-true" if cfg.strategy == "fsdp" and cfg.precision == "bf16-mixed" else cfg.precision


def data_parallel_mesh(cfg: TrainerConfig, strategy: ModelParallelStrategy):
    """The mesh the blocks are sharded over: all devices (FSDP), or with `hsdp` a 2-D (node, device)
    mesh, sharded within a node and replicated across nodes (HSDP)."""
    if not cfg.hsdp:
        return strategy.device_mesh["data_parallel"]
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(strategy.root_device.type, (cfg.num_nodes, cfg.devices),
                            mesh_dim_names=("replicate", "shard"))


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

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.sharded:  # FSDP2 reduce-scatters only on an optimiser step's last micro-batch (Lightning: DDP only)
            self.model.set_requires_gradient_sync((batch_idx + 1) % self.trainer.accumulate_grad_batches == 0)
        inputs = batch[:, :-1]
        bias = document_attention_bias(inputs, self.model.config.eos_token_id) if self.optim.document_mask else None
        ce, loss = self.model(inputs, batch[:, 1:], self.optim.loss_chunk, self.optim.z_loss, attention_bias=bias)
        self.step_losses.append(ce.detach())  # no host sync here: TrainingHistory reads them every log_every steps
        return loss

    def configure_optimizers(self):
        fused = next(self.model.parameters()).device.type == "cuda"
        return adamw_warmup_cosine(decay_groups(self.model, self.optim.weight_decay), self.optim.lr,
                                   self.optim.weight_decay, tuple(self.optim.betas), self.optim.warmup_fraction,
                                   self.total_steps, self.optim.warmup_steps, fused=fused)


def flops_per_token(n_params: int, model_cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward and backward) plus attention's score and
    value products, 12 * layers * width * context (PaLM, appendix B)."""
    return 6 * n_params + 12 * model_cfg.n_layers * model_cfg.d_model * seq_len


def peak_flops(device_name: str) -> float | None:
    """The bf16 peak of a GPU by name, or None for one not in PEAK_BF16_FLOPS."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


class TrainingHistory(L.Callback):
    """Per optimiser step: the loss averaged over the global batch (all ranks, all micro-batches), the
    learning rate used, tokens/s, and the model FLOPs utilisation when the GPU's peak is known.

    The step losses stay on the device and are averaged over ranks and read (one collective, one host
    sync) every `every` steps, on checkpoint steps and at the end; a non-finite one then stops the run
    (FloatingPointError) before any checkpoint could keep it. Tokens/s is that window's average."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops_total: float | None,
                 every: int = 1, checkpoint_every: int = 1):
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak_flops_total
        self.every, self.checkpoint_every = every, checkpoint_every
        self.loss: list[tuple[int, float]] = []
        self.histories: dict[str, list[tuple[int, float]]] = {"pretrain_lr": [], "pretrain_tokens_per_s": []}
        if peak_flops_total:
            self.histories["pretrain_mfu"] = []
        self.pending: list[tuple[int, torch.Tensor, float]] = []  # (step, this rank's mean loss, lr) not yet read
        self.last_step, self.clock, self.step_lr = 0, 0.0, 0.0

    def on_train_start(self, trainer, module):
        self.last_step, self.clock = trainer.global_step, time.perf_counter()

    def on_before_optimizer_step(self, trainer, module, optimizer):  # the scheduler moves on before batch end
        self.step_lr = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == (self.pending[-1][0] if self.pending else self.last_step):  # still accumulating gradients
            return
        self.pending.append((step, torch.stack(module.step_losses).mean(), self.step_lr))
        module.step_losses.clear()
        if step % self.every and step % self.checkpoint_every and step < trainer.max_steps:
            return
        losses = trainer.strategy.reduce(torch.stack([loss for _, loss, _ in self.pending]), reduce_op="mean")
        losses = losses.tolist()  # the one host sync of the window
        now = time.perf_counter()
        tokens_per_s = self.tokens_per_step * (step - self.last_step) / (now - self.clock)
        for (at, _, lr), loss in zip(self.pending, losses):
            if not math.isfinite(loss):
                raise FloatingPointError(f"pre-training loss is {loss} at step {at}; lower trainer.lr or check the data")
            self.loss.append((at, loss))
            self.histories["pretrain_lr"].append((at, lr))
            self.histories["pretrain_tokens_per_s"].append((at, tokens_per_s))
            if self.peak:
                self.histories["pretrain_mfu"].append((at, self.flops_per_token * tokens_per_s / self.peak))
        self.pending.clear()
        self.last_step, self.clock = step, now


class WeightEMA(EMAWeightAveraging):
    """`trainer.ema_decay`: an exponential moving average of the weights, updated after every optimiser
    step, kept on the training device. Lightning's callback puts the average in a checkpoint's
    `state_dict` (the training weights under `current_model_state`, restored on resume) and copies it
    into the model when training ends, so the exported model is the average."""

    def __init__(self, decay: float):
        super().__init__(decay=decay, update_every_n_steps=1)

    def setup(self, trainer, module, stage):
        self._device = trainer.strategy.root_device  # not module.device: the module is moved there later
        with warnings.catch_warnings():  # its note that it does not shard: fsdp is refused (TrainerConfig.check)
            warnings.filterwarnings("ignore", "You're using the WeightAveraging callback with a model that overrides")
            super().setup(trainer, module, stage)


def lightning_strategy(cfg: TrainerConfig):
    if cfg.strategy == "fsdp":
        return ModelParallelStrategy(data_parallel_size=cfg.devices * cfg.num_nodes, tensor_parallel_size=1)
    if cfg.strategy == "ddp":
        return DDPStrategy()  # gloo on CPUs, NCCL on GPUs
    return "auto"


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk: a pointer must not outlive what it names in a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the data itself was flushed
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


class AtomicCheckpoints(Checkpoint):
    """Every `every` optimiser steps, the whole resumable state (weights, optimiser, data position) goes
    into a NEW `step-NNNNNN.ckpt` in `dirpath`; once it is whole, rank 0 repoints the symlink
    `last.ckpt` at it (a temporary link `os.replace`d over the old one, atomic on POSIX) and only then
    removes the previous checkpoint. Whenever a job is killed, `last.ckpt` thus names a whole checkpoint;
    a step checkpoint it does not name is an interrupted save, removed when the next run starts.

    Not Lightning's ModelCheckpoint: with save_last=True it overwrites last.ckpt in place (a kill during
    a sharded save leaves shards of two steps and no whole checkpoint), and its save_last="link" deletes
    the old link, then the old checkpoint, before linking the new one. Being a `Checkpoint`, this runs
    after the other callbacks (Lightning orders them so), when DataPosition has recorded the position."""

    def __init__(self, dirpath: Path, every: int):
        self.dirpath, self.every, self.saved_step = dirpath, every, -1

    @property
    def last(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def setup(self, trainer, module, stage):  # every rank; the process group is up, nothing loaded yet
        if trainer.is_global_zero and self.dirpath.is_dir():
            self._remove_all_but(os.readlink(self.last) if self.last.is_symlink() else None)
        trainer.strategy.barrier()

    def on_train_start(self, trainer, module):
        self.saved_step = trainer.global_step  # a resumed run does not save the step it resumed from again

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every or step == self.saved_step:  # not a saving step, or still accumulating after it
            return
        name = STEP_CHECKPOINT.format(step)
        # Every rank takes part (a sharded save is collective: each writes its shards, rank 0 the metadata
        # last); save_checkpoint ends with a barrier, so once it returns the checkpoint is whole.
        trainer.save_checkpoint(self.dirpath / name, weights_only=False)  # the whole state: optimiser, loops, callbacks
        self.saved_step = step
        if trainer.is_global_zero:
            path = self.dirpath / name
            _fsync(path / "meta.pt" if path.is_dir() else path)  # the distributed-checkpoint writer fsyncs the shards
            _fsync(path if path.is_dir() else self.dirpath)
            self._point(name)
            self._remove_all_but(name)  # the previous checkpoint, now that `last` no longer names it

    def _point(self, name: str) -> None:
        link = self.dirpath / f".{LAST_CHECKPOINT}.tmp"
        link.unlink(missing_ok=True)
        os.symlink(name, link)  # relative, so the output folder can move
        os.replace(link, self.last)  # rename(2): `last` names the old or the new checkpoint, never neither
        _fsync(self.dirpath)

    def _remove_all_but(self, keep: str | None) -> None:
        for entry in self.dirpath.iterdir():
            if entry.name.startswith(("step-", f".{LAST_CHECKPOINT}")) and entry.name != keep:
                _remove(entry)


def checkpoint_step(checkpoint: Path) -> int:
    """The optimiser step a checkpoint was saved at, from a file or a distributed-checkpoint folder."""
    meta = checkpoint / "meta.pt" if checkpoint.is_dir() else checkpoint
    # mmap: only the step is read here; Lightning loads the checkpoint itself in fit().
    return torch.load(meta, weights_only=True, mmap=True)["global_step"]


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
        callbacks=[AtomicCheckpoints(checkpoints, trainer_cfg.checkpoint_every), DataPosition(), history,
                   *([WeightEMA(trainer_cfg.ema_decay)] if trainer_cfg.ema_decay else []), *callbacks],
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


def full_state_dict(model: torch.nn.Module, trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU. With fsdp this is a collective every rank must join; rank 0 gets them."""
    if not isinstance(trainer.strategy, ModelParallelStrategy):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_histories(artifact: Path) -> dict[str, list[tuple[int, float]]]:
    """Every per-step history of a pre-training artifact (for MLflow): the loss and the throughput ones."""
    return {"pretrain_loss": json.loads((artifact / LOSS_CURVE).read_text()),
            **json.loads((artifact / HISTORIES).read_text())}


def export_hf(model: OLMo, tokenizer_dir: Path, out: Path, state: dict[str, torch.Tensor] | None = None
              ) -> OlmoForCausalLM:
    """Write `model` (or `state`, its unsharded weights, when `model` is sharded) as a transformers
    `OlmoForCausalLM` (same logits) with its tokenizer to `out`."""
    hf = ai2_to_hf_olmo(model.config.asdict(), model.state_dict() if state is None else state)  # one mapping
    hf.save_pretrained(out)
    hf_tokenizer(tokenizer_dir).save_pretrained(out)
    return hf


def hf_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(tokenizer_dir), eos_token=EOS, pad_token=PAD)


# ----------------------------------------------------------------------------- processes of one node
# Lightning starts the other ranks of a multi-device run by re-running the calling script. That suits
# a training script, not a sweep job: a re-run `launch.py -m` would start the whole sweep again. So a
# job that trains on several local devices starts its other ranks itself, each running only this
# stage (`python -m detox.training.pretrain ARGS.json`); Lightning then takes the processes as given (the
# LOCAL_RANK environment variable), as under torchrun or SLURM.


def pretrain_on_local_ranks(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, seq_len: int, seed: int,
                            mixture: Path, tokenizer_dir: Path, out: Path) -> dict:
    """`pretrain` with every rank of one node: this process is rank 0, the others are started here."""
    import socket
    import subprocess
    import sys

    ranks = trainer_cfg.devices
    if (ranks == 1 and trainer_cfg.num_nodes == 1) or started_externally():
        return pretrain(model_cfg, trainer_cfg, seq_len, seed, mixture, tokenizer_dir, out)
    if trainer_cfg.num_nodes > 1:
        raise ConfigError(f"trainer.num_nodes={trainer_cfg.num_nodes} needs a launcher that starts every node's "
                          "processes: hydra/launcher=slurm")
    with socket.socket() as s:  # a free port for the process group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = out / "ranks.json"
    spec.write_text(json.dumps({"model": vars(model_cfg), "trainer": vars(trainer_cfg), "seq_len": seq_len,
                                "seed": seed, "mixture": str(mixture), "tokenizer": str(tokenizer_dir), "out": str(out)}))
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(ranks), "NODE_RANK": "0"}
    children = [subprocess.Popen([sys.executable, "-m", "detox.training.pretrain", str(spec)],
                                 env={**os.environ, **shared, "LOCAL_RANK": str(rank)}) for rank in range(1, ranks)]
    previous = {key: os.environ.get(key) for key in (*shared, "LOCAL_RANK")}
    os.environ.update({**shared, "LOCAL_RANK": "0"})
    try:
        metrics = pretrain(model_cfg, trainer_cfg, seq_len, seed, mixture, tokenizer_dir, out)
    except BaseException:
        for child in children:  # rank 0 failed: the other ranks would wait for it forever
            child.kill()
        raise
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.update({key: value})
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # this process may run the next job of a sweep (Hydra's basic launcher): its pre-training needs a
            # process group of its own, not this one, whose other ranks are gone
            torch.distributed.destroy_process_group()
        failed = [child.args for child in children if child.wait() != 0]
    if failed:
        raise RuntimeError(f"pre-training ranks failed: {failed}")
    spec.unlink()
    return metrics


def _run_rank(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    trainer = spec["trainer"]
    trainer["betas"] = tuple(trainer["betas"])
    pretrain(ModelConfig(**spec["model"]), TrainerConfig(**trainer), spec["seq_len"], spec["seed"],
             Path(spec["mixture"]), Path(spec["tokenizer"]), Path(spec["out"]))


if __name__ == "__main__":
    import sys

    _run_rank(sys.argv[1])
