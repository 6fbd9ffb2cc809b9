"""Corpora tokenised once, and mixtures drawn from them without tokenising again (data.source=corpora).

The prepare stage writes one token store per training corpus: the packer's shard layout (detox.data.packing:
`tokens-*.bin`, `index.json`) plus `documents.npy`, the int64 offset of every document's first token (one
more offset at the end), each document closed by its end-of-document token. The clean store holds the
corpus's first documents up to `data.clean_tokens` (what every mixture takes); the toxic store the whole
toxic corpus, so its index says at once how many toxic tokens there are (`store_summary`).

A mixture is then a selection of document indices (`sample_mixture`): the clean documents in order (the
same clean text for every ratio and seed, as the paper fixes it), the toxic ones a seeded random permutation
of the whole toxic store cut at the ratio's budget (a true random sample: two seeds share only the documents
chance gives them, and the sample is not biased towards the corpus file's start), interleaved as the packer
interleaves them. The drawn toxic indices are kept in the mixture folder (`toxic_documents.npy`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from detox.core.progress import progress
from detox.core.schema import ConfigError
from detox.core.shards import INDEX, ShardedTokens
from detox.core.tokens import EOS
from detox.data.packing import (
    SHARD_TOKENS,
    _Documents,
    _ShardWriter,
    start_afresh,
    token_dtype,
    toxic_tokens_for,
    write_index,
)
from detox.data.documents import Document

log = logging.getLogger(__name__)

DOCUMENTS = "documents.npy"  # a store's document offsets
TOXIC_DOCUMENTS = "toxic_documents.npy"  # a sampled mixture's toxic document indices, in the order drawn
STORES = ("clean", "toxic")  # the prepare stage's subfolders


def prepare_store(documents: Iterable[str | Document], tokenizer: Tokenizer, out: Path, *,
                  max_tokens: int | None = None, shard_tokens: int = SHARD_TOKENS, batch_size: int = 1000,
                  desc: str = "prepare") -> dict:
    """Tokenise `documents` in order into a store in `out` (see the module docstring), stopping at the first
    document that brings it to `max_tokens` (None: the whole stream). A folder left by a killed preparation
    is started over (`start_afresh`)."""
    out = Path(out)
    start_afresh(out)
    out.mkdir(parents=True, exist_ok=True)
    token_type, eos = token_dtype(tokenizer), tokenizer.token_to_id(EOS)
    if eos is None:
        raise ConfigError(f"the tokenizer lacks the end-of-document token {EOS}")
    stream = _Documents(((doc, False) for doc in documents), tokenizer, eos, token_type, batch_size)
    writer, ends, total = _ShardWriter(out, token_type, shard_tokens), [0], 0
    bar = progress(total=max_tokens, unit="tok", unit_scale=True, desc=desc)
    while max_tokens is None or total < max_tokens:
        document = stream.next()
        if document is None:
            break
        writer.write(document[0])
        total += document[0].size
        ends.append(total)
        bar.update(document[0].size)
    bar.close()
    lengths = writer.close()
    np.save(out / DOCUMENTS, np.asarray(ends, dtype=np.int64))  # before the index, which completes the folder
    counts = {"store_tokens": total, "store_docs": len(ends) - 1}
    write_index(out, token_type, eos, lengths, counts)
    return counts


class TokenStore:
    """A prepared store, memory-mapped: `len()` documents, `document(i)` its tokens (a copy), `lengths`."""

    def __init__(self, folder: Path | str):
        self.tokens = ShardedTokens(folder)
        path = Path(folder) / DOCUMENTS
        if not path.is_file():
            raise ConfigError(f"{folder}: no {DOCUMENTS}; not a prepared token store")
        self.offsets = np.load(path, mmap_mode="r")
        if self.offsets[-1] != self.tokens.total_tokens:
            raise ConfigError(f"{path}: its documents end at token {self.offsets[-1]}, the store holds "
                              f"{self.tokens.total_tokens}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def document(self, i: int) -> np.ndarray:
        return self.tokens.window(int(self.offsets[i]), int(self.offsets[i + 1] - self.offsets[i]))


def store_summary(folder: Path | str) -> dict | None:
    """A prepared store's counts from its index alone (`store_tokens`, `store_docs`), or None if not prepared."""
    index = Path(folder) / INDEX
    return json.loads(index.read_text())["counts"] if index.is_file() else None


def sample_mixture(clean: TokenStore, toxic: TokenStore, ratio: float, clean_tokens: int, seed: int, out: Path, *,
                   shard_tokens: int = SHARD_TOKENS, on_short: str = "error", max_repeats: int = 3,
                   toxic_name: str = "toxic source") -> dict:
    """Write the (ratio, seed) mixture of two stores into `out`, as the packer lays it out and with its
    metrics; no text is tokenised. Toxic documents: a seeded permutation of the toxic store, taken until
    `toxic_tokens_for(C, ratio)` tokens; a store too small for that is an error (on_short='error') or is
    permuted again, at most `max_repeats` more times (on_short='repeat', counted as mix_toxic_repeats)."""
    out = Path(out)
    start_afresh(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_ends = np.asarray(clean.offsets[1:])
    if clean_ends.size == 0 or clean_ends[-1] < clean_tokens:
        raise ConfigError(f"the clean store holds {int(clean_ends[-1]) if clean_ends.size else 0} tokens; the "
                          f"mixture needs {clean_tokens}")
    clean_docs = int(np.searchsorted(clean_ends, clean_tokens)) + 1  # the first documents reaching C tokens
    clean_realised = int(clean_ends[clean_docs - 1])
    target = round(toxic_tokens_for(clean_realised, ratio))
    chosen = _toxic_sample(toxic, target, seed, max_repeats if on_short == "repeat" else 0, toxic_name)
    lengths = toxic.lengths
    schedule = random.Random(f"schedule:{seed}")  # the packer's interleaving, on lists known in advance
    writer = _ShardWriter(out, np.dtype(clean.tokens.dtype.name), shard_tokens)
    clean_due, toxic_due, next_clean, next_toxic = clean_realised, int(lengths[chosen].sum()), 0, 0
    for _ in progress(range(clean_docs + len(chosen)), desc="sample mixture", leave=False):
        if toxic_due and schedule.random() * (clean_due + toxic_due) < toxic_due:
            writer.write(toxic.document(chosen[next_toxic]))
            toxic_due -= int(lengths[chosen[next_toxic]])
            next_toxic += 1
        else:
            writer.write(clean.document(next_clean))
            clean_due -= int(clean.offsets[next_clean + 1] - clean.offsets[next_clean])
            next_clean += 1
    shard_lengths = writer.close()
    np.save(out / TOXIC_DOCUMENTS, chosen)
    toxic_realised = int(lengths[chosen].sum())
    total = clean_realised + toxic_realised
    metrics = {"mix_clean_tokens": clean_realised, "mix_toxic_tokens": toxic_realised, "mix_total_tokens": total,
               "mix_realised_ratio": 100 * toxic_realised / total, "mix_clean_docs": clean_docs,
               "mix_toxic_docs": len(chosen), "mix_toxic_repeats": int(max(0, len(chosen) - len(toxic))),
               "mix_toxic_store_tokens": int(toxic.offsets[-1])}
    write_index(out, np.dtype(clean.tokens.dtype.name), clean.tokens.eos_id, shard_lengths, metrics)
    return metrics


def _toxic_sample(toxic: TokenStore, target: int, seed: int, repeats: int, name: str) -> np.ndarray:
    """Toxic document indices: seeded permutations of the store, one after another (a repeat only once every
    document was used), cut at the first document that reaches `target` tokens."""
    if target == 0:
        return np.zeros(0, dtype=np.int64)
    available = int(toxic.offsets[-1])
    passes = -(-target // max(available, 1))  # permutations needed
    if passes > 1 + repeats:
        raise ConfigError(f"{name} holds {available:,} tokens ({len(toxic):,} documents); the mixture needs "
                          f"{target:,} toxic tokens" + (f" (read {repeats} extra times)" if repeats else
                                                         ": enlarge it, lower the ratio or clean_tokens"))
    rng = np.random.default_rng([seed, 1])  # the toxic documents of this seed, whatever the ratio
    order = np.concatenate([rng.permutation(len(toxic)) for _ in range(passes)])
    ends = np.cumsum(toxic.lengths[order])
    return order[:int(np.searchsorted(ends, target)) + 1]
