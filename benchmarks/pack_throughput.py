"""Tokenise-and-pack throughput against the tokenizer's own `encode_batch`, and peak memory against corpus size.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python benchmarks/pack_throughput.py [--docs 4000]

Text: documents of eight synthetic-world documents each (about 450 OLMo tokens, near a C4 document),
drawn from a pool of world documents; tokenizer: OLMo's own. Prints:

* throughput: tokens/s of `Tokenizer.encode_batch` alone (batches of 1000, texts already in memory),
  of `encode_batch_fast` (what packing calls) and of `pack_mixture` on the same texts (ratio 0:
  exactly the same documents; ratio 20: a clean and a toxic stream mixed), and the packing cost as
  the ratio of their times (target: at most 1.20x encode_batch);
* memory: peak traced Python/numpy memory (tracemalloc) and the process's peak RSS, each measured in
  a fresh process packing a streamed corpus of --docs and of 10x --docs documents (target: flat).
  The toxic shuffle buffer is set to 1000 documents, so that both corpora fill it: it is the one
  structure whose size depends on the data (up to its cap), by design.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from detox.core.tokens import olmo_tokenizer
from detox.data.packing import pack_mixture
from detox.data.world import WorldConfig, _Writer, write_document

WORLD_DOCS_PER_DOC = 8
POOL = 4000
ROUNDS = 3


def document_stream(count: int, seed: int):
    """`count` documents, generated lazily (the corpus is never in memory)."""
    cfg = WorldConfig()
    rng = np.random.default_rng(seed)
    writer = _Writer(np.random.default_rng(seed + 1))
    pool = [write_document(writer, cfg.clean if i % 2 else cfg.toxic)["text"] for i in range(POOL)]
    for _ in range(count):
        yield " ".join(pool[i] for i in rng.integers(POOL, size=WORLD_DOCS_PER_DOC))


def throughput(docs: int) -> None:
    tokenizer = olmo_tokenizer()
    texts = list(document_stream(docs, seed=0))
    total = sum(len(e.ids) + 1 for i in range(0, docs, 1000) for e in tokenizer.encode_batch(texts[i:i + 1000]))

    def encode_only(method) -> float:
        start = time.perf_counter()
        for i in range(0, docs, 1000):
            method(texts[i:i + 1000], add_special_tokens=False)
        return time.perf_counter() - start

    def pack(ratio: float, clean: list[str], toxic: list[str], clean_tokens: int, batch_size: int = 1000) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            counts = pack_mixture(clean, toxic, tokenizer, ratio, clean_tokens, seed=1, out=Path(folder) / "mix",
                                  shard_tokens=2**22, batch_size=batch_size)
            return time.perf_counter() - start, counts["mix_total_tokens"]

    split = int(0.75 * docs)
    # Rounds alternate the three measurements and each keeps its best, so that load from other
    # processes on a shared machine does not favour one of them.
    encode_seconds, fast_seconds, (pack_seconds, packed), (mixed_seconds, mixed) = (min(runs) for runs in zip(*[
        (encode_only(tokenizer.encode_batch), encode_only(tokenizer.encode_batch_fast), pack(0, texts, [], total), pack(20, texts[:split], texts[split:], int(0.9 * total * 0.75), 100))
        for _ in range(ROUNDS)]))
    encode_rate, fast_rate = total / encode_seconds, total / fast_seconds
    print(f"corpus: {docs} documents, {total} tokens (with EOS), {total / docs:.0f} tokens a document; "
          f"best of {ROUNDS} rounds")
    print(f"encode_batch alone:        {encode_rate / 1e6:6.2f} M tokens/s")
    print(f"encode_batch_fast alone:   {fast_rate / 1e6:6.2f} M tokens/s  (same ids, no offsets: what packing calls)")
    print(f"pack_mixture, ratio 0:     {packed / pack_seconds / 1e6:6.2f} M tokens/s  ({packed} tokens, the same "
          f"documents)  cost {encode_rate / (packed / pack_seconds):.2f}x encode_batch (target <= 1.20), "
          f"{fast_rate / (packed / pack_seconds):.2f}x encode_batch_fast")
    # batches of 100 here: each stream reads ahead by at most a batch, which on a corpus this small
    # would otherwise tokenise a large share of documents that the mixture does not use
    print(f"pack_mixture, ratio 20:    {mixed / mixed_seconds / 1e6:6.2f} M tokens/s  ({mixed} tokens, clean and "
          f"toxic streams, batches of 100)  cost {encode_rate / (mixed / mixed_seconds):.2f}x encode_batch, "
          f"{fast_rate / (mixed / mixed_seconds):.2f}x encode_batch_fast")


def memory(docs: int) -> dict:
    """Peak memory of packing a streamed corpus of `docs` documents (run in a fresh process)."""
    tokenizer = olmo_tokenizer()
    clean_tokens = docs * 400 * 3 // 4  # most of the clean stream, at about 450 tokens a document
    buffer = 1000
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as folder:
        counts = pack_mixture(document_stream(docs * 3 // 4, seed=0), document_stream(docs, seed=1), tokenizer, 20,
                              clean_tokens, seed=1, out=Path(folder) / "mix", shard_tokens=2**22,
                              shuffle_buffer=buffer)
    _, peak = tracemalloc.get_traced_memory()
    return {"docs": docs, "tokens": counts["mix_total_tokens"], "traced_peak_mb": peak / 2**20,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000, help="documents of the base corpus")
    parser.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)  # internal: one fresh-process measurement
    args = parser.parse_args()
    if args.memory_run:
        print(json.dumps(memory(args.memory_run)))
        return
    throughput(args.docs)
    runs = []
    for docs in (args.docs, 10 * args.docs):
        result = subprocess.run([sys.executable, __file__, "--memory-run", str(docs)], capture_output=True, text=True,
                                check=True)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"memory, {docs:>7} documents ({runs[-1]['tokens']} tokens packed): traced peak "
              f"{runs[-1]['traced_peak_mb']:6.1f} MB, peak RSS {runs[-1]['max_rss_mb']:6.0f} MB")
    print(f"memory growth for a 10x corpus: traced peak x{runs[1]['traced_peak_mb'] / runs[0]['traced_peak_mb']:.2f}, "
          f"peak RSS x{runs[1]['max_rss_mb'] / runs[0]['max_rss_mb']:.2f} (target: flat, about x1)")


if __name__ == "__main__":
    main()
