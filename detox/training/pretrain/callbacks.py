"""The trainer's callbacks besides the data position (detox.training.pretrain.loader): the per-step
histories (loss, learning rate, tokens/s, model FLOPs utilisation), the exponential moving average of
the weights (`trainer.ema_decay`), and the atomic step checkpoints a killed run resumes from.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, EMAWeightAveraging

from detox.core.ranks import slurm_task
from detox.training.config import ModelConfig

# Dense (no sparsity) bf16 peak FLOP/s of one GPU, matched in order against torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
                   ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12))


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


CHECKPOINT_DIR = "checkpoints"  # in the stage's output; removed once the model is exported
# A relative symlink to the newest whole step checkpoint, which is a file (one process, ddp) or a
# distributed-checkpoint folder (fsdp); Lightning and `checkpoint_step` read it as that checkpoint.
LAST_CHECKPOINT = "last.ckpt"
STEP_CHECKPOINT = "step-{:06d}.ckpt"  # one per save, named by the optimiser step
# What submitit has SLURM send every task `signal_delay_s` before the time limit (hydra/launcher=slurm);
# submitit's own handler then requeues the job and exits
WARNING_SIGNAL = signal.SIGUSR2


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

    Also a checkpoint once `minutes` of training passed since the last one (rank 0's clock decides), and,
    in a SLURM task, one as soon as the step in flight ends after SLURM's warning signal (WARNING_SIGNAL),
    which is then handed on to the handler that was there before (submitit's: requeue and exit), so a
    requeued job loses nothing. Whether to save is agreed by all ranks (a sharded save is collective).

    Not Lightning's ModelCheckpoint: with save_last=True it overwrites last.ckpt in place (a kill during
    a sharded save leaves shards of two steps and no whole checkpoint), and its save_last="link" deletes
    the old link, then the old checkpoint, before linking the new one. Being a `Checkpoint`, this runs
    after the other callbacks (Lightning orders them so), when DataPosition has recorded the position."""

    def __init__(self, dirpath: Path, every: int, minutes: float = 0.0):
        self.dirpath, self.every, self.seconds, self.saved_step = dirpath, every, minutes * 60, -1
        self.checked_step, self.saved_at, self.warned, self.handed_on = -1, time.monotonic(), None, None

    @property
    def last(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def setup(self, trainer, module, stage):  # every rank; the process group is up, nothing loaded yet
        if trainer.is_global_zero and self.dirpath.is_dir():
            self._remove_all_but(os.readlink(self.last) if self.last.is_symlink() else None)
        trainer.strategy.barrier()
        if slurm_task() and threading.current_thread() is threading.main_thread():  # where handlers can be set
            self.warned = False
            self.handed_on = signal.signal(WARNING_SIGNAL, self._on_warning)

    def teardown(self, trainer, module, stage):
        if self.warned is not None:
            signal.signal(WARNING_SIGNAL, self.handed_on if self.handed_on is not None else signal.SIG_DFL)
            self.warned = None

    def _on_warning(self, signum, frame):
        self.warned = True  # saved when the step in flight ends (a handler may not run collectives)

    def on_train_start(self, trainer, module):
        self.saved_step = trainer.global_step  # a resumed run does not save the step it resumed from again
        self.saved_at = time.monotonic()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step in (self.saved_step, self.checked_step):  # still accumulating after a step already looked at
            return
        self.checked_step = step
        due = step % self.every == 0
        if self.seconds or self.warned is not None:  # a rank's clock or signal: one decision for all ranks
            late = bool(self.seconds) and trainer.is_global_zero and time.monotonic() - self.saved_at >= self.seconds
            due = trainer.strategy.reduce_boolean_decision(due or late or bool(self.warned), all=False)
        if due:
            self._save(trainer, step)
        if self.warned:
            self.warned = False
            if callable(self.handed_on):  # submitit's handler: requeue the job, exit
                self.handed_on(WARNING_SIGNAL, None)

    def _save(self, trainer, step: int) -> None:
        name = STEP_CHECKPOINT.format(step)
        # Every rank takes part (a sharded save is collective: each writes its shards, rank 0 the metadata
        # last); save_checkpoint ends with a barrier, so once it returns the checkpoint is whole.
        trainer.save_checkpoint(self.dirpath / name, weights_only=False)  # the whole state: optimiser, loops, callbacks
        self.saved_step, self.saved_at = step, time.monotonic()
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


SNAPSHOT_DIR = "snapshots"  # in the stage's output with trainer.snapshots: one transformers model per snapshot
SNAPSHOT = "step-{:06d}"
SNAPSHOT_INFO = "snapshot.json"  # {"step", "tokens_seen"} inside each snapshot's folder


def snapshot_steps(total_steps: int, count: int) -> list[int]:
    """`count` optimiser steps spread evenly before the last one (the exported model is the last)."""
    return sorted({max(1, round(total_steps * k / (count + 1))) for k in range(1, count + 1)} - {total_steps})


class Snapshots(L.Callback):
    """`trainer.snapshots`: at each of `steps`, rank 0 writes the model as the stage exports it (the weight
    average with trainer.ema_decay, else the weights) to snapshots/step-NNNNNN/, through a temporary folder
    renamed when whole; a resumed run keeps the ones already written. Unsharded runs only."""

    def __init__(self, steps: list[int], tokenizer_dir: Path, out: Path, tokens_per_step: int):
        self.steps, self.tokenizer_dir, self.out, self.tokens_per_step = set(steps), tokenizer_dir, out, tokens_per_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        folder = self.out / SNAPSHOT_DIR / SNAPSHOT.format(step)
        if step not in self.steps or not trainer.is_global_zero or folder.exists():
            return
        from detox.training.pretrain.export import export_hf

        ema = next((c for c in trainer.callbacks if isinstance(c, WeightEMA)), None)
        # Lightning's averaged copy of the module (its private attribute: the callback offers no reader)
        model = ema._average_model.module.model if ema is not None and ema._average_model is not None else module.model
        work = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        export_hf(model, self.tokenizer_dir, work)
        (work / SNAPSHOT_INFO).write_text(json.dumps({"step": step, "tokens_seen": step * self.tokens_per_step}))
        os.replace(work, folder)
