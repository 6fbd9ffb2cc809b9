"""Benchmark: the pre-training loss step (output layer, cross-entropy, backward) at a 50k vocabulary,
full logits against the chunked loss (`detox.training.loss.lm_loss`), peak memory and time, in one run.

    OMP_NUM_THREADS=2 python benchmarks/loss_step.py                  # 2 x 1024 tokens, d 768, chunks of 128
    python benchmarks/loss_step.py --rows 4 --seq 1024 --chunk 256 --repeats 5

Each variant runs in a fresh process (a CPU has no allocator statistics, so peak memory is the process's
peak resident size minus its size once the inputs exist), alternating, `--repeats` times; the figures are
medians. Time is the process's CPU time (all its threads), which other load on a shared machine
disturbs less than wall-clock time. The step is what pre-training does after the last block: final hidden states (rows × seq × d)
and the tied output matrix (vocab × d) in, the loss and both gradients out.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

VOCAB = 50_280  # OLMo's tokenizer; the output layer has 50 304 rows (a multiple of 128), as olmo_config pads it


def rss_mb() -> float:
    """This process's current resident size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(args) -> None:
    import torch

    from detox.training.loss import lm_loss

    g = torch.Generator().manual_seed(0)
    rows = 128 * -(-args.vocab // 128)
    hidden = torch.randn(args.rows, args.seq, args.d_model, generator=g, requires_grad=True)
    weight = (0.02 * torch.randn(rows, args.d_model, generator=g)).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.rows, args.seq), generator=g)
    hidden.grad, weight.grad = torch.zeros_like(hidden), torch.zeros_like(weight)  # allocated before the baseline
    base = rss_mb()
    start = time.process_time()
    ce, loss = lm_loss(hidden, weight, targets, chunk=args.chunk if args.variant == "chunked" else 0)
    loss.backward()
    seconds = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"seconds": seconds, "peak_mb": peak - base, "loss": float(ce)}))


def run(variant: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--rows", str(args.rows), "--seq", str(args.seq),
               "--d-model", str(args.d_model), "--vocab", str(args.vocab), "--chunk", str(args.chunk)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.variant = args.worker
        return worker(args)
    fp32_logits_mb = args.rows * args.seq * (128 * -(-args.vocab // 128)) * 4 / 2**20
    print(f"loss step: {args.rows} x {args.seq} tokens, d_model {args.d_model}, vocabulary {args.vocab:,} "
          f"(fp32 logits of the micro-batch: {fp32_logits_mb:,.0f} MB); chunks of {args.chunk} positions; "
          f"{args.repeats} repeats, each variant in a fresh process")
    results = {"full": [], "chunked": []}
    for _ in range(args.repeats):
        for variant in results:
            results[variant].append(run(variant, args))
    losses = {v: r[0]["loss"] for v, r in results.items()}
    median = {v: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb")} for v, rs in results.items()}
    for variant, m in median.items():
        print(f"  {variant:8s} peak memory above the inputs {m['peak_mb']:8,.0f} MB, CPU time {m['seconds']:6.2f} s "
              f"(loss {losses[variant]:.6f})")
    print(f"chunked / full: peak memory {median['chunked']['peak_mb'] / median['full']['peak_mb']:.3f}, "
          f"CPU time {median['chunked']['seconds'] / median['full']['seconds']:.3f}; "
          f"loss difference {abs(losses['chunked'] - losses['full']):.1e}")


if __name__ == "__main__":
    main()
