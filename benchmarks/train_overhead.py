"""Benchmark: what Lightning (and detox's training callbacks) cost per optimiser step against a bare
PyTorch loop with the same model, batches, AdamW, schedule and clipping, timed in the same run with
interleaved repeats; on a GPU also tokens/s and model FLOPs utilisation of an OLMo-1B-shaped model.

    OMP_NUM_THREADS=1 python benchmarks/train_overhead.py            # CPU part (and the GPU part on a GPU)
    python benchmarks/train_overhead.py repeats=5 steps=30 d_model=256

Prints the median step time of each, per repeat and overall, and their ratio (target: Lightning at
most 5 % slower), and the ratio of the fastest repeats, which other load on the machine disturbs least. The first steps of each run (start-up, allocation) are left out of the medians.
"""

import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.config import ModelConfig, TrainerConfig  # noqa: E402
from detox.training.pretrain import (BatchLayout, DataPosition, OlmoLM, TokenWindows, TrainingHistory,  # noqa: E402
                            WindowData, flops_per_token, olmo_config, peak_flops)
from olmo.model import OLMo  # noqa: E402

WARMUP_STEPS = 3  # left out of the medians


class StepClock(L.Callback):
    def __init__(self):
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())


def setup(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, seq_len: int, steps: int, vocab: int = 512):
    tokens = np.random.default_rng(0).integers(0, vocab, size=steps * trainer_cfg.global_batch_tokens + 1)
    windows = TokenWindows(tokens.astype(np.int32), seq_len)
    config = olmo_config(model_cfg, vocab, 0, 1, seq_len).asdict()
    return windows, config


def lightning_steps(model_cfg, trainer_cfg, seq_len, steps) -> list[float]:
    windows, config = setup(model_cfg, trainer_cfg, seq_len, steps)
    torch.manual_seed(0)
    module = OlmoLM(config, vars(trainer_cfg), steps)
    n_params = sum(p.numel() for p in module.model.parameters())
    clock = StepClock()
    peak = peak_flops(torch.cuda.get_device_name()) if trainer_cfg.accelerator == "gpu" else None
    history = TrainingHistory(trainer_cfg.global_batch_tokens, flops_per_token(n_params, model_cfg, seq_len), peak)
    trainer = L.Trainer(max_steps=steps, accelerator=trainer_cfg.accelerator, devices=1,
                        precision=trainer_cfg.precision, gradient_clip_val=trainer_cfg.grad_clip, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        use_distributed_sampler=False, num_sanity_val_steps=0,
                        callbacks=[DataPosition(), history, clock])
    trainer.fit(module, datamodule=WindowData(windows, BatchLayout.of(trainer_cfg, seq_len), seed=0))
    return np.diff(clock.ends)[WARMUP_STEPS:].tolist(), history


def bare_steps(model_cfg, trainer_cfg, seq_len, steps) -> list[float]:
    windows, config = setup(model_cfg, trainer_cfg, seq_len, steps)
    torch.manual_seed(0)
    from olmo.config import ModelConfig as OlmoModelConfig

    model = OLMo(OlmoModelConfig(**config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer_cfg.lr, weight_decay=trainer_cfg.weight_decay,
                                  betas=trainer_cfg.betas)
    warmup = max(1, round(trainer_cfg.warmup_fraction * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                  0.1 + 0.45 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    batch = trainer_cfg.global_batch_tokens // seq_len
    order = np.random.default_rng([0, 0]).permutation(len(windows))
    loader = torch.utils.data.DataLoader(windows, batch_sampler=[order[i:i + batch].tolist()
                                                                 for i in range(0, steps * batch, batch)])
    ends = []
    for x in loader:
        loss = F.cross_entropy(model(x[:, :-1]).logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        loss.item()  # the Lightning run reads the loss every step as well (history)
        ends.append(time.perf_counter())
    return np.diff(ends)[WARMUP_STEPS:].tolist()


def cpu_overhead(args: dict) -> None:
    torch.set_num_threads(1)
    model_cfg = ModelConfig(d_model=args["d_model"], n_heads=4, n_layers=2)
    seq_len = 128
    trainer_cfg = TrainerConfig(global_batch_tokens=8 * seq_len, micro_batch_size=8)
    light_all, bare_all, light_best, bare_best = [], [], math.inf, math.inf
    print(f"CPU, 1 thread: OLMo d_model={model_cfg.d_model} x {model_cfg.n_layers} layers, 8 x {seq_len} tokens a step")
    for repeat in range(args["repeats"]):
        light, _ = lightning_steps(model_cfg, trainer_cfg, seq_len, args["steps"])
        bare = bare_steps(model_cfg, trainer_cfg, seq_len, args["steps"])
        light_all += light
        bare_all += bare
        light_best, bare_best = min(light_best, statistics.median(light)), min(bare_best, statistics.median(bare))
        print(f"  repeat {repeat + 1}: Lightning {1e3 * statistics.median(light):7.2f} ms/step, "
              f"bare loop {1e3 * statistics.median(bare):7.2f} ms/step, "
              f"ratio {statistics.median(light) / statistics.median(bare):.3f}")
    ratio = statistics.median(light_all) / statistics.median(bare_all)
    print(f"overall: Lightning {1e3 * statistics.median(light_all):.2f} ms/step, bare {1e3 * statistics.median(bare_all):.2f}"
          f" ms/step: Lightning / bare = {ratio:.3f} (target <= 1.05); fastest repeats (least disturbed by other"
          f" load): {light_best / bare_best:.3f}")


def gpu_throughput(args: dict) -> None:
    seq_len = 2048
    model_cfg = ModelConfig(name="olmo1b", d_model=2048, n_heads=16, n_layers=16, mlp_ratio=8)
    trainer_cfg = TrainerConfig(global_batch_tokens=4 * seq_len, micro_batch_size=4, accelerator="gpu",
                                precision="bf16-mixed", lr=4e-4)
    _, history = lightning_steps(model_cfg, trainer_cfg, seq_len, args["gpu_steps"])
    rates = [v for _, v in history.histories["pretrain_tokens_per_s"]][WARMUP_STEPS:]
    mfu = [v for _, v in history.histories.get("pretrain_mfu", [])][WARMUP_STEPS:]
    print(f"GPU {torch.cuda.get_device_name()}: OLMo-1B shape, bf16-mixed, 4 x {seq_len} tokens a step: "
          f"{statistics.median(rates):,.0f} tokens/s" + (f", MFU {100 * statistics.median(mfu):.1f} %" if mfu else
                                                         " (peak FLOP/s of this GPU unknown: no MFU)"))


def main(argv: list[str]) -> None:
    args = {"repeats": 3, "steps": 25, "d_model": 128, "gpu_steps": 15} | {k: int(v) for k, v in
                                                                            (a.split("=", 1) for a in argv)}
    cpu_overhead(args)
    if torch.cuda.is_available():
        gpu_throughput(args)
    else:
        print("no GPU: tokens/s and MFU of the OLMo-1B shape not measured")


if __name__ == "__main__":
    main(sys.argv[1:])
