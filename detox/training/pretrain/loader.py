"""The pre-training data: the packed mixture cut into windows, and the order a run trains on them.

Every epoch is one seeded permutation of the windows cut into global batches, each rank taking its
slice, so the order depends on neither the number of devices nor a resume; a checkpoint holds the
position (Lightning's resumable-loader protocol), and a resumed run continues mid-epoch. The callback
that keeps that position current (`DataPosition`) is here too: it is the sampler's half of resuming.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from detox.core.schedule import BatchLayout


class TokenWindows(torch.utils.data.Dataset):
    """Consecutive windows of `seq_len + 1` tokens from the packed mixture (inputs and shifted targets).

    A mixture with span masks (method=loss_mask: `tokens.span_loss`) gives (tokens, loss weights,
    unlikelihood weights) instead, the weights of each target (tokens 1..seq_len): 0 and the span loss's
    `unlikelihood` on a toxic span's tokens, 1 and 0 elsewhere."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len
        self.span_loss = getattr(tokens, "span_loss", None)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, i: int):
        start = i * self.seq_len
        window = torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))
        if self.span_loss is None:
            return window
        span = torch.from_numpy(self.tokens.window(start + 1, self.seq_len, masks=True).astype(np.float32))
        return window, 1 - span, self.span_loss["unlikelihood"] * span


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
