"""Multi-process pre-training on CPUs (gloo): Lightning starts the second process by re-running the
script, as it does under a launcher, so each case runs a small script in a subprocess. Each case costs a few process start-ups (importing Lightning), hence `slow`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from detox.core.artifacts import LOSS_CURVE
from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain import checkpoint_step, pretrain

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 32
TINY = dict(d_model=16, n_heads=2, n_layers=2)
TRAINER = dict(epochs=2, global_batch_tokens=8 * SEQ_LEN, micro_batch_size=2, checkpoint_every=3, num_threads=1)

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import lightning as L

    from detox.training.config import ModelConfig, TrainerConfig
    from detox.training.pretrain import pretrain

    data, out, strategy, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])


    class Kill(L.Callback):  # every rank dies at the start of step `kill_at`, as a killed job would
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == kill_at:
                raise SystemExit(3)


    trainer = TrainerConfig(**{TRAINER}, strategy=strategy, devices=2)
    pretrain(ModelConfig(**{TINY}), trainer, {SEQ_LEN}, 5, data / "mixture", data / "tokenizer", out,
             callbacks=[Kill()] if kill_at >= 0 else [])
""").format(TRAINER=TRAINER, TINY=TINY, SEQ_LEN=SEQ_LEN)


@pytest.fixture(scope="module")
def data(mixture, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    for part in ("mixture", "tokenizer"):
        (root / part).symlink_to(mixture / part)
    (root / "run.py").write_text(SCRIPT)
    pretrain(ModelConfig(**TINY), TrainerConfig(**TRAINER), SEQ_LEN, 5, root / "mixture", root / "tokenizer",
             root / "single")  # the one-process reference: 4 micro-batches accumulated per step (2 per rank sharded)
    return root


def two_processes(data: Path, out: Path, strategy: str, kill_at: int = -1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(data / "run.py"), str(data), str(out), strategy, str(kill_at)],
                          cwd=data, env=env, capture_output=True, text=True, timeout=300)


def assert_weights_close(a: Path, b: Path, exact: bool = False):
    wa, wb = load_file(a / "hf" / "model.safetensors"), load_file(b / "hf" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        if exact:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=2e-6, msg=key)


def losses(out: Path) -> list[float]:
    return [loss for _, loss in json.loads((out / LOSS_CURVE).read_text())]


def assert_two_processes_match_one(data: Path, out: Path, strategy: str) -> None:
    result = two_processes(data, out, strategy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_weights_close(out, data / "single")
    assert losses(out) == pytest.approx(losses(data / "single"), rel=1e-5)


@pytest.mark.slow
def test_fsdp_on_two_processes_is_the_one_process_run_and_resumes_exactly(data, tmp_path):
    assert_two_processes_match_one(data, tmp_path / "whole", "fsdp")
    assert not (tmp_path / "whole" / "checkpoints").exists()

    killed = tmp_path / "killed"
    assert two_processes(data, killed, "fsdp", kill_at=7).returncode != 0
    checkpoint = killed / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir() and (checkpoint / ".metadata").is_file()  # a distributed checkpoint folder
    assert checkpoint_step(checkpoint) == 6 and not (killed / "hf").exists()
    resumed = two_processes(data, killed, "fsdp")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_weights_close(killed, tmp_path / "whole", exact=True)
    assert losses(killed) == losses(tmp_path / "whole")[6:]


@pytest.mark.slow
def test_ddp_on_two_processes_is_the_one_process_run(data, tmp_path):
    assert_two_processes_match_one(data, tmp_path / "ddp", "ddp")
