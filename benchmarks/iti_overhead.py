"""Benchmark: greedy generation with ITI hooks (detox.steering.steer.steering) against plain generation.

    OMP_NUM_THREADS=1 python benchmarks/iti_overhead.py               # 5 interleaved repeats
    OMP_NUM_THREADS=1 python benchmarks/iti_overhead.py repeats=9

A small random OLMo (4 layers, d_model 256, 8 heads, vocab 2048) on CPU, one thread; the same 16
prompts of 24 tokens, batch 16, 32 new tokens, greedy. ITI steers 16 heads (alpha 8) through forward
pre-hooks on every layer's o_proj. Plain and steered runs alternate, so load on the machine hits both
alike; prints the median time of each and the overhead ratio (target: at most 5 %).
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import OlmoConfig, OlmoForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.steering.probe_fit import ProbeResult  # noqa: E402
from detox.steering.steer import iti_shifts, select_heads, steering  # noqa: E402


def main(argv: list[str]) -> None:
    options = {"repeats": 5, "new_tokens": 32} | {k: int(v) for k, v in (a.split("=") for a in argv)}
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_layers, n_heads, d_model = 4, 8, 256
    model = OlmoForCausalLM(OlmoConfig(vocab_size=2048, hidden_size=d_model, intermediate_size=4 * d_model,
                                       num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                       pad_token_id=1, eos_token_id=0)).eval()
    rng = np.random.default_rng(0)
    head_dim = d_model // n_heads
    directions = rng.standard_normal((n_layers, n_heads, head_dim))
    probes = ProbeResult(accuracy=rng.random((n_layers, n_heads)),
                         mass_mean=(directions / np.linalg.norm(directions, axis=-1, keepdims=True)).astype(np.float32),
                         probe_direction=np.zeros((n_layers, n_heads, head_dim), np.float32),
                         sigma=rng.uniform(0.5, 2, (n_layers, n_heads)), train_idx=np.arange(10),
                         val_idx=np.arange(10, 12), seed=0)
    shifts = iti_shifts(probes, select_heads(probes.accuracy, 16), alpha=8.0)
    prompts = torch.randint(2, 2048, (16, 24), generator=torch.Generator().manual_seed(0))

    def generate() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=options["new_tokens"],
                           do_sample=False, eos_token_id=None, pad_token_id=1)
        return time.perf_counter() - start

    generate()  # warm-up
    plain, steered = [], []
    for _ in range(options["repeats"]):
        plain.append(generate())
        with steering(model, shifts):
            steered.append(generate())
    plain_s, steered_s = statistics.median(plain), statistics.median(steered)
    print(f"model: {n_layers} layers, d_model {d_model}, {n_heads} heads; batch 16 x 24 prompt tokens, "
          f"{options['new_tokens']} new tokens, {options['repeats']} interleaved repeats, 16 steered heads")
    print(f"plain generation  : median {plain_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in plain)})")
    print(f"ITI hooks         : median {steered_s:.3f} s  (all: {', '.join(f'{t:.3f}' for t in steered)})")
    print(f"overhead          : {100 * (steered_s / plain_s - 1):+.1f} %  (target <= 5 %)")


if __name__ == "__main__":
    main(sys.argv[1:])
