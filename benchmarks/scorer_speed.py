"""Benchmark: texts a second of the classifier scorer (detox.evaluation.scorers.ClassifierScorer), the code
path every evaluation, annotation and filter scores through: tokenisation, the length-sorted batches,
the forward pass, the activation.

    python benchmarks/scorer_speed.py                           # tiny and RoBERTa-base-shaped classifiers, CPU
    python benchmarks/scorer_speed.py --sizes base --texts 4000 --device cuda       # on a GPU (bfloat16)
    python benchmarks/scorer_speed.py --model /models/unbiased-toxic-roberta        # a real local classifier

Two rates: by the wall clock, and per CPU-second of this process (all its threads) times its threads, which
is what the same threads do with the machine to themselves (a shared machine's wall clock counts others'
work too). Without --model the classifiers are built here with random weights (no hub: speed does not depend on
the weights): `tiny` (2 layers, width 128) and `base` (RoBERTa-base's shape: 12 layers, width 768, 125 M
parameters with a 50,265-token vocabulary, as unitary/unbiased-toxic-roberta and tomh/toxigen_roberta
are), with a byte-level BPE tokenizer trained on the benchmark's own words. The texts are `--words`
random words each (20 by default: an evaluation scores continuations of 20 new tokens). Prints texts/s
and tokens/s per size, and a last line `RESULT {...}`.

Measured on the development machine (2 CPU cores shared with other work, load average 13-16; torch 2.13
CPU build, float32, batch 32, 20-word texts; `--texts 300 --repeats 2`, the median of 2 runs):
    tiny: 24 texts/s by the wall clock, 114 texts per CPU-second: 228 texts/s (7,000 tokens/s) on 2 idle threads;
    base (RoBERTa-base shape, 125 M): 4.5 texts/s by the wall clock, 12.1 texts per CPU-second: 24 texts/s
    (480 tokens/s, 20 tokens a text) on 2 idle threads.
A paper job's evaluation (77,996 texts: ToxiGen 2,996 greedy continuations, RealToxicityPrompts 3,000
prompts x 25 samples) is then about an hour on 2 idle cores (detox/evaluation/throughput.py; the guide's
page docs/guide/measuring-toxicity.md has the GPU estimate and Perspective's 21.7 h beside it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.evaluation.config import ScorerConfig  # noqa: E402
from detox.evaluation.scorers import ClassifierScorer  # noqa: E402

SIZES = {  # (layers, width, heads, feed-forward, vocabulary)
    "tiny": (2, 128, 2, 512, 4096),
    "base": (12, 768, 12, 3072, 50265),
}


def words(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(count)]


def texts(count: int, length: int, seed: int) -> list[str]:
    vocabulary = words(3000, seed)
    rng = np.random.default_rng(seed + 1)
    return [" ".join(rng.choice(vocabulary, size=length)) for _ in range(count)]


def build_classifier(size: str, folder: Path, corpus: list[str]) -> Path:
    """A randomly initialised RoBERTa classifier of `size` with a tokenizer trained on `corpus`, saved."""
    import torch
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    from detox.core.tokens import EOS, PAD, byte_level_bpe

    layers, width, heads, ffn, vocab = SIZES[size]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(corpus, vocab_size=min(vocab, 8000)),
                                        eos_token=EOS, pad_token=PAD, model_max_length=512)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1}))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def measure(model: str, toxic_label: str, device: str, inputs: list[str], batch_size: int, repeats: int) -> dict:
    scorer = ClassifierScorer(ScorerConfig(name="classifier", model=model, toxic_label=toxic_label,
                                           batch_size=batch_size), device=device)
    scorer(inputs[:batch_size])  # warm-up: the first batch pays for allocations
    import torch

    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        scorer(inputs)
        if scorer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tokens = sum(len(ids) for ids in scorer.tokenizer(inputs)["input_ids"])
    seconds, cpu_seconds = statistics.median(times), statistics.median(cpu)
    # On a shared machine the wall clock counts other work's time too; CPU seconds (over all threads) do not:
    # texts per CPU-second x threads is the rate of the same threads with the machine to themselves.
    threads = torch.get_num_threads()
    return {"texts_per_s": len(inputs) / seconds, "tokens_per_s": tokens / seconds,
            "texts_per_cpu_s": len(inputs) / cpu_seconds, "idle_texts_per_s": len(inputs) / cpu_seconds * threads,
            "idle_tokens_per_s": tokens / cpu_seconds * threads, "threads": threads,
            "tokens_per_text": tokens / len(inputs), "seconds": seconds, "dtype": str(scorer.model.dtype),
            "device": str(scorer.device), "parameters": sum(p.numel() for p in scorer.model.parameters())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--model", help="a local classifier folder to measure instead of the built ones")
    parser.add_argument("--toxic-label", default="toxic", help="with --model: the label scored")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--words", type=int, default=20, help="words a text")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    inputs = texts(args.texts, args.words, seed=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"model": (args.model, args.toxic_label)} if args.model else \
            {size: (str(build_classifier(size, Path(tmp) / size, inputs)), "toxic") for size in args.sizes}
        for name, (model, label) in models.items():
            result = measure(model, label, args.device, inputs, args.batch_size, args.repeats)
            results[name] = result
            print(f"{name}: {result['texts_per_s']:,.0f} texts/s, {result['tokens_per_s']:,.0f} tokens/s by the wall clock; "
                  f"{result['texts_per_cpu_s']:,.1f} texts per CPU-second, so {result['idle_texts_per_s']:,.0f} texts/s "
                  f"({result['idle_tokens_per_s']:,.0f} tokens/s) on {result['threads']} idle thread(s) "
                  f"({result['tokens_per_text']:.1f} tokens a text, {result['parameters'] / 1e6:.1f} M parameters, "
                  f"{result['dtype']} on {result['device']}, batch {args.batch_size}, median of {args.repeats})")
    print("RESULT " + json.dumps(results))
    return results


if __name__ == "__main__":
    main()
