"""When AtomicCheckpoints saves besides every `checkpoint_every` steps: once `checkpoint_minutes` passed, and
on SLURM's warning signal before the time limit (then handing the signal on to submitit's handler); and
AdamW's epsilon (trainer.eps) reaching the optimiser without moving existing models' keys."""

import os
import signal
from types import SimpleNamespace

import pytest
import torch

from detox.training.config import TrainerConfig
from detox.training.optim import adamw_warmup_cosine
from detox.training.pretrain import callbacks
from detox.training.pretrain.callbacks import WARNING_SIGNAL, AtomicCheckpoints


class Trainer(SimpleNamespace):
    """What AtomicCheckpoints reads of Lightning's trainer, one process: its saves are recorded."""

    def __init__(self):
        super().__init__(global_step=0, is_global_zero=True, saved=[],
                         strategy=SimpleNamespace(barrier=lambda: None, reduce_boolean_decision=lambda d, all: d))

    def save_checkpoint(self, path, weights_only):
        self.saved.append(self.global_step)
        path.write_bytes(b"state")

    def steps(self, callback, *steps):
        for step in steps:
            self.global_step = step
            for micro_batch in range(2):  # two micro-batches a step: one decision a step
                callback.on_train_batch_end(self, None, None, None, micro_batch)


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    return now


def test_a_checkpoint_once_the_minutes_passed(tmp_path, clock):
    callback, trainer = AtomicCheckpoints(tmp_path, every=100, minutes=20), Trainer()
    callback.setup(trainer, None, "fit")
    callback.on_train_start(trainer, None)
    clock[0] = 19 * 60
    trainer.steps(callback, 1, 2)
    clock[0] = 20 * 60
    trainer.steps(callback, 3, 4)
    clock[0] = 39 * 60
    trainer.steps(callback, 5, 100)  # step 100: checkpoint_every, which restarts the clock
    clock[0] = 60 * 60
    trainer.steps(callback, 101)
    assert trainer.saved == [3, 100, 101]
    assert os.readlink(tmp_path / "last.ckpt") == "step-000101.ckpt"


def test_slurms_warning_signal_saves_then_goes_to_submitits_handler(tmp_path, monkeypatch, clock):
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # an srun task (detox.core.ranks.slurm_task)
    monkeypatch.setenv("SLURM_PROCID", "0")
    handed = []
    previous = signal.signal(WARNING_SIGNAL, lambda signum, frame: handed.append(signum))  # as submitit's
    try:
        callback, trainer = AtomicCheckpoints(tmp_path, every=100), Trainer()
        callback.setup(trainer, None, "fit")
        callback.on_train_start(trainer, None)
        trainer.steps(callback, 1, 2)
        os.kill(os.getpid(), WARNING_SIGNAL)  # what SLURM sends signal_delay_s before the limit
        assert trainer.saved == [] and handed == []  # nothing in the handler: the step in flight ends first
        trainer.steps(callback, 3, 4)
        assert trainer.saved == [3] and handed == [WARNING_SIGNAL]
        callback.teardown(trainer, None, "fit")
        assert signal.getsignal(WARNING_SIGNAL) is not callback._on_warning  # submitit's handler back
    finally:
        signal.signal(WARNING_SIGNAL, previous)


def test_outside_slurm_the_signal_is_left_alone(tmp_path):
    before = signal.getsignal(WARNING_SIGNAL)
    callback = AtomicCheckpoints(tmp_path, every=2)
    callback.setup(Trainer(), None, "fit")
    assert signal.getsignal(WARNING_SIGNAL) is before


def test_adamw_eps_is_the_trainers_and_keys_only_when_changed():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = adamw_warmup_cosine([param], 1.0, 0.0, (0.9, 0.95), 0.05, 10, eps=1e-5)["optimizer"]
    assert optimizer.param_groups[0]["eps"] == 1e-5
    assert "eps" not in TrainerConfig().result_spec()  # torch's 1e-8: every model trained before keeps its key
    assert TrainerConfig(eps=1e-5).result_spec()["eps"] == 1e-5
    assert "checkpoint_minutes" not in TrainerConfig(checkpoint_minutes=20).result_spec()
