"""Checkpoints that survive a kill: each save goes to a new step checkpoint and `last.ckpt` (a symlink)
is switched to it only once it is whole, so a kill during a save leaves the previous checkpoint as the
last one, and the run resumes from it exactly (tests/training/test_pretrain.py holds the one-process case)."""

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
from detox.training.pretrain import checkpoint_step

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 32
TINY = dict(d_model=16, n_heads=2, n_layers=2)
TRAINER = dict(epochs=2, global_batch_tokens=8 * SEQ_LEN, micro_batch_size=4, checkpoint_every=3, num_threads=1)

# Two fsdp processes (Lightning starts the second by re-running this script). With die_in_save >= 0, every
# rank writes its shards of the save at that step and dies before the save's metadata: a kill mid-save.
SCRIPT = textwrap.dedent("""
    import os
    import sys
    from pathlib import Path

    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemWriter

    from detox.training.config import ModelConfig, TrainerConfig
    from detox.training.pretrain import STEP_CHECKPOINT, pretrain

    data, out, die_in_save = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    write = FileSystemWriter.write_data


    def write_then_die(self, plan, planner):
        written = write(self, plan, planner)
        if Path(self.path).name == STEP_CHECKPOINT.format(die_in_save):
            dist.barrier()  # both ranks' shards are on disk; no rank outlives the test's look at them
            os._exit(3)
        return written


    FileSystemWriter.write_data = write_then_die
    trainer = TrainerConfig(**{TRAINER}, strategy="fsdp", devices=2)
    pretrain(ModelConfig(**{TINY}), trainer, {SEQ_LEN}, 5, data / "mixture", data / "tokenizer", out)
""").format(TRAINER=TRAINER, TINY=TINY, SEQ_LEN=SEQ_LEN)


def two_fsdp_processes(data: Path, out: Path, die_in_save: int = -1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(data / "run.py"), str(data), str(out), str(die_in_save)],
                          cwd=data, env=env, capture_output=True, text=True, timeout=300)


def losses(out: Path) -> list[float]:
    return [loss for _, loss in json.loads((out / LOSS_CURVE).read_text())]


@pytest.mark.slow
def test_fsdp_killed_during_a_sharded_save_resumes_exactly_from_the_previous_checkpoint(mixture, tmp_path):
    for part in ("mixture", "tokenizer"):
        (tmp_path / part).symlink_to(mixture / part)
    (tmp_path / "run.py").write_text(SCRIPT)
    whole = two_fsdp_processes(tmp_path, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = tmp_path / "killed"
    # 3, or a signal when Lightning's watch over the ranks kills rank 0 as soon as rank 1 is gone
    assert two_fsdp_processes(tmp_path, killed, die_in_save=9).returncode != 0
    checkpoints = killed / "checkpoints"
    assert os.readlink(checkpoints / "last.ckpt") == "step-000006.ckpt"  # the previous save, still whole
    assert checkpoint_step(checkpoints / "last.ckpt") == 6
    half = checkpoints / "step-000009.ckpt"
    assert any(half.glob("*.distcp")) and not (half / ".metadata").exists()  # the shards, not the metadata
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step-000006.ckpt", "step-000009.ckpt"]

    resumed = two_fsdp_processes(tmp_path, killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not checkpoints.exists()
    expected, got = (load_file(out / "hf" / "model.safetensors") for out in (tmp_path / "whole", killed))
    assert expected.keys() == got.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    assert losses(killed) == losses(tmp_path / "whole")[6:]
