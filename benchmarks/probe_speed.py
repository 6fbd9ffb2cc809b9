"""Benchmark: batched torch probes (fit_probes_batched) against the per-head scikit-learn loop (fit_probes).

    OMP_NUM_THREADS=1 python benchmarks/probe_speed.py                 # OLMo-1B shape, sklearn on 2 layers
    OMP_NUM_THREADS=1 python benchmarks/probe_speed.py sklearn_layers=16   # the full sklearn loop (slow)
    OMP_NUM_THREADS=2 python benchmarks/probe_speed.py threads=2 repeats=5  # two threads, 5 interleaved runs

Synthetic activations shaped like OLMo-1B's heads (16 layers x 16 heads x 128 dims, 2000 texts, half
toxic), twice: isotropic noise, and anisotropic noise as real head outputs have (a mean offset and a
fast-decaying spectrum), each with a toxicity direction planted in a third of the heads with strengths
from faint to clear, so accuracies spread from chance to near 100 %. The sklearn loop runs on the first
`sklearn_layers` layers only (all their heads) and its time is extrapolated to all heads; the output
says so. The two run `repeats` times, interleaved, on `threads` torch threads (on a shared machine the
times are noisy: the medians and the median of the per-run ratios are what to read). Prints both
times, the speed-up (target >= 10x) and the mean and max per-head accuracy difference on the heads
both fitted (target: mean within 1 point).
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.steering.probe_fit import fit_probes, fit_probes_batched  # noqa: E402


def synthetic_activations(n_texts: int, n_layers: int, n_heads: int, head_dim: int, anisotropic: bool, seed: int):
    """(acts, labels, planted): noise, plus a toxicity direction planted in about a third of the heads.

    isotropic: independent dimensions with scales in [0.5, 2]. anisotropic: as attention-head outputs
    look, a per-head mean offset and a covariance whose eigenvalues fall as k^-1.5 (k = 1..head_dim) in
    random axes. The planted shift is 0.1 to 3 standard deviations along its direction.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n_texts) % 2
    noise = rng.standard_normal((n_texts, n_layers, n_heads, head_dim), dtype=np.float32)
    if anisotropic:
        spectrum = np.arange(1, head_dim + 1) ** -0.75  # square roots of the eigenvalues
        axes = np.linalg.qr(rng.standard_normal((n_layers, n_heads, head_dim, head_dim)))[0]
        mixing = (spectrum[:, None] * axes.swapaxes(-1, -2)).astype(np.float32)  # rows: scaled eigenvectors
        acts = np.einsum("nlhk,lhkd->nlhd", noise, mixing)
        acts += 3 * rng.standard_normal((n_layers, n_heads, head_dim)).astype(np.float32) / np.sqrt(head_dim)
    else:
        acts = noise * rng.uniform(0.5, 2.0, size=(n_layers, n_heads, head_dim)).astype(np.float32)
    planted = rng.random((n_layers, n_heads)) < 1 / 3
    direction = rng.standard_normal((n_layers, n_heads, head_dim))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    spread = np.einsum("nlhd,lhd->nlh", acts, direction).std(0)
    strength = np.where(planted, rng.uniform(0.1, 3.0, size=(n_layers, n_heads)) * spread, 0.0)
    acts += (labels[:, None, None, None] * (strength[..., None] * direction)).astype(np.float32)
    return acts, labels, planted


def main(argv: list[str]) -> None:
    options = {"sklearn_layers": 2, "texts": 2000, "seed": 0, "threads": 1, "repeats": 1} | {
        k: int(v) for k, v in (a.split("=") for a in argv)}
    torch.set_num_threads(options["threads"])
    n_layers, n_heads, head_dim = 16, 16, 128
    subset = options["sklearn_layers"]
    note = "" if subset == n_layers else f" (timed on layers 0..{subset - 1}, {subset * n_heads} heads, x{n_layers / subset:g})"
    for anisotropic in (False, True):
        acts, labels, planted = synthetic_activations(options["texts"], n_layers, n_heads, head_dim, anisotropic,
                                                      options["seed"])
        print(f"\n{'anisotropic' if anisotropic else 'isotropic'} activations {acts.shape}, "
              f"{planted.sum()} heads with a planted direction, {options['threads']} thread(s)")
        batched_s, sklearn_s = [], []
        for _ in range(options["repeats"]):  # interleaved, so both see the same load on a shared machine
            start = time.perf_counter()
            batched = fit_probes_batched(acts, labels, seed=options["seed"])
            batched_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = fit_probes(acts[:, :subset], labels, seed=options["seed"])
            sklearn_s.append((time.perf_counter() - start) * n_layers / subset)
        ratios = np.array(sklearn_s) / np.array(batched_s)

        diff = 100 * np.abs(batched.accuracy[:subset] - reference.accuracy)
        cos = (batched.probe_direction[:subset] * reference.probe_direction).sum(-1)
        runs = f"median of {options['repeats']} runs" if options["repeats"] > 1 else "one run"
        print(f"  sklearn loop : {np.median(sklearn_s):7.2f} s for all heads{note}, {runs}")
        print(f"  batched torch: {np.median(batched_s):7.2f} s for all heads, {runs}")
        print(f"  speed-up     : {np.median(ratios):7.1f}x   (target >= 10x; per run: "
              f"{', '.join(f'{r:.1f}' for r in ratios)})")
        print(f"  accuracy |batched - sklearn| over {diff.size} heads: mean {diff.mean():.3f}, max {diff.max():.3f} "
              f"points (target: mean <= 1)")
        print(f"  probe directions, cosine batched vs sklearn: min {cos.min():.5f}, mean {cos.mean():.5f}")
        print(f"  accuracy range (batched): {100 * batched.accuracy.min():.1f} .. {100 * batched.accuracy.max():.1f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
