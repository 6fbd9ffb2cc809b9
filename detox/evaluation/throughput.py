"""How long a job's scoring takes: plan mode's estimates, not measurements of the machine it plans for
(benchmarks/scorer_speed.py measures a classifier's speed where it runs).

* A classifier of RoBERTa-base's size (125 M parameters: unitary/unbiased-toxic-roberta, tomh/toxigen_roberta),
  in tokens a second. On a CPU, measured: benchmarks/scorer_speed.py on the development machine's 2 cores
  (float32, batch 32, 20-token texts; per CPU-second of its threads, the machine being shared): about 480
  tokens/s, 24 texts/s. On one GPU, estimated (no GPU measured it):
  a token costs about 2 x 85 M non-embedding parameters = 0.17 GFLOP; an H100 at 10 % of its dense
  bfloat16 peak (989 TFLOP/s), a modest rate for short padded batches of a small encoder, gives about
  580,000 tokens/s; the estimate takes a third of that, 200,000, for tokenisation and transfers.
* Perspective: one request a text, at `scorer.qps` requests a second (the API's default quota is 1).
"""

from __future__ import annotations

CLASSIFIER_TOKENS_PER_S = {"cpu": 480.0, "gpu": 200_000.0}  # see the module's docstring
SPECIAL_TOKENS = 2  # a classifier's tokenizer adds them to every text (<s>, </s>)
MAX_CLASSIFIER_TOKENS = 512  # RoBERTa's and BERT's maximum length: a longer document is cut there


def classifier_seconds(tokens: float, device: str) -> float:
    """About how long a RoBERTa-base-sized classifier takes to score `tokens` on `device` (cpu | gpu)."""
    return tokens / CLASSIFIER_TOKENS_PER_S[device]


def text_tokens(texts: int, tokens_per_text: float) -> float:
    """The tokens a classifier reads for `texts` texts of `tokens_per_text` tokens each (cut at its maximum)."""
    return texts * min(tokens_per_text + SPECIAL_TOKENS, MAX_CLASSIFIER_TOKENS)


def duration(seconds: float) -> str:
    """`seconds` as a person reads a duration: s, min, h, or days beside the hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:,.1f} h" if hours < 48 else f"{hours:,.0f} h ({hours / 24:,.1f} days)"
