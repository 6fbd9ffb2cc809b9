"""GPU check: a 2-rank FSDP2 pre-training of 6 steps at sequence 2,048 through detox's pre-training stage,
killed right after its checkpoint at step 3 (both ranks, after the save), run again, and compared with an
uninterrupted run: the resumed loss curve must equal it exactly (deterministic algorithms on).

    python benchmarks/fsdp_resume.py OUT          # 2 GPUs, bf16, a 4-layer OLMo of width 256
    python benchmarks/fsdp_resume.py OUT --cpu    # 2 CPU processes (gloo), fp32, sequence 64: checks this script
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS, KILLED_AFTER = 6, 3
SEQ_LEN = {"gpu": 2048, "cpu": 64}

RANKS = """
import os, sys
from pathlib import Path

import torch.distributed as dist

from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain import pretrain
from detox.training.pretrain.callbacks import AtomicCheckpoints

inputs, out, die_after, gpu, seq = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "gpu", int(sys.argv[5])
save = AtomicCheckpoints._save


def save_then_die(self, trainer, step):  # a kill right after a whole checkpoint, on every rank
    save(self, trainer, step)
    if step == die_after:
        dist.barrier()
        os._exit(3)


AtomicCheckpoints._save = save_then_die
trainer = TrainerConfig(epochs=1, global_batch_tokens=2 * seq * 2, micro_batch_size=1, lr=1e-3, eps=1e-5,
                        checkpoint_every={every}, accelerator="gpu" if gpu else "cpu", devices=2, strategy="fsdp",
                        precision="bf16-mixed" if gpu else "32-true", deterministic=True)
model = ModelConfig(name="check", d_model=256, n_heads=4, n_layers=4) if gpu else ModelConfig(name="tiny", d_model=32, n_heads=2, n_layers=2)
pretrain(model, trainer, seq, 1, inputs / "mixture", inputs / "tokenizer", out)
""".format(every=KILLED_AFTER)


def run(folder: Path, out: Path, die_after: int, device: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(folder / "ranks.py"), str(folder / "inputs"), str(out), str(die_after),
                           device, str(SEQ_LEN[device])], cwd=folder, env=env, timeout=600).returncode


def main() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_throughput import write_inputs

    folder, device = Path(sys.argv[1]), "cpu" if "--cpu" in sys.argv else "gpu"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ranks.py").write_text(RANKS)
    write_inputs(folder / "inputs", STEPS * 4 * (SEQ_LEN[device] + 1) + 1)  # 4 windows a step
    losses = {}
    assert run(folder, folder / "whole", -1, device) == 0, "the uninterrupted run failed"
    assert run(folder, folder / "resumed", KILLED_AFTER, device) == 3, "the run was not killed after its checkpoint"
    assert run(folder, folder / "resumed", -1, device) == 0, "the resumed run failed"
    for name in ("whole", "resumed"):  # {step: loss}; the resumed run records the steps after its checkpoint
        losses[name] = dict(json.loads((folder / name / "loss_curve.json").read_text()))
    after = {step: loss for step, loss in losses["whole"].items() if step > KILLED_AFTER}
    print(f"2-rank FSDP2 at seq {SEQ_LEN[device]} on {device}: uninterrupted {losses['whole']}")
    print(f"killed after the checkpoint of step {KILLED_AFTER}, resumed: {losses['resumed']}")
    if not after or losses["resumed"] != after:
        raise SystemExit(f"the resumed run's losses differ from the uninterrupted run's after step {KILLED_AFTER}")
    print(f"exact resume: the losses of steps {min(after)}-{max(after)} are equal")


if __name__ == "__main__":
    main()
