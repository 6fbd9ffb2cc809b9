"""The one packer: a (ratio, seed) mixture of two document streams into token shards on disk, with
constant memory. Every source kind (detox.data.sources) packs through it.

Layout of a packed folder: `tokens-00000.bin`, `tokens-00001.bin`, ... raw little-endian token ids
(uint16 when every id fits, else uint32; an end-of-document token after every document) and
`index.json` (dtype, per-shard lengths, EOS id, the realised counts). `index.json` is written last,
atomically, so a folder without it is an interrupted packing and `ShardedTokens` refuses it.

Ratio p means toxic tokens are p % of the mixture with the clean tokens fixed at C, as in the paper:
clean documents are taken in order until C tokens (so every ratio and seed trains on the same clean
text) and toxic documents are added until `toxic_tokens_for(C_realised, p)` tokens. The seed picks the
toxic documents (a seeded shuffle buffer over the toxic stream) and the order: each next document is
toxic with probability (toxic tokens still due) / (all tokens still due), so the two sources are
spread evenly through the mixture instead of one after the other.

A document is a text or a `Document` (text and tags); the packer counts the documents it takes per
(part, tags), for metrics that depend on what went in (the world's implied toxicity, MEDA's shares).
A document tagged DROPPED (method=filter) counts towards its part's budget but is not written: the
mixture is the one its ratio selects, less what the filter drops. With `span_loss` (method=loss_mask)
a `masks-NNNNN.bin` beside each token shard marks (1) the tokens that overlap a document's `spans`, and
the index records `span_loss` (the unlikelihood weight on them), which training reads.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from detox.core.schema import ConfigError
from detox.core.shards import DTYPES, INDEX, MASK_SHARD, SHARD
from detox.core.tokens import EOS
from detox.data.corpora import shuffled
from detox.data.documents import Document, as_document

log = logging.getLogger(__name__)

FLUSH_TOKENS = 1 << 20  # tokens gathered in memory before a write
SHARD_TOKENS = 2**27  # tokens per shard file unless the source kind says otherwise
DROPPED = "dropped"  # the tag of a document that counts towards the mixture's budget but is not written (method=filter)


def toxic_tokens_for(clean_tokens: float, ratio: float) -> float:
    """The toxic tokens of a mixture of `clean_tokens` clean tokens at ratio p: C * p / (100 - p), so that
    toxic tokens are p % of the whole (the one definition of the ratio; the packer rounds it)."""
    return clean_tokens * ratio / (100 - ratio)


def token_dtype(tokenizer: Tokenizer, dtype: str | None = None) -> np.dtype:
    """The smallest dtype (or the requested one) that holds every id of the tokenizer."""
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if dtype is None:
        dtype = "uint16" if vocab <= 2**16 else "uint32"
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}, expected one of {tuple(DTYPES)}")
    if vocab > np.iinfo(DTYPES[dtype]).max + 1:
        raise ConfigError(f"the tokenizer has {vocab} ids, more than {dtype} holds")
    return np.dtype(DTYPES[dtype])


def pack_mixture(clean: Iterable[str | Document], toxic: Iterable[str | Document], tokenizer: Tokenizer,
                 ratio: float, clean_tokens: int, seed: int, out: Path, shard_tokens: int = SHARD_TOKENS,
                 batch_size: int = 1000, on_short: str = "error", *, dtype: str | None = None,
                 shuffle_buffer: int = 10_000, max_repeats: int = 3, clean_name: str = "clean source",
                 toxic_name: str = "toxic source", repeat_hint: str | None = "on_short='repeat'",
                 taken: Counter | None = None, span_loss: dict | None = None) -> dict:
    """Tokenise, mix and write the mixture into `out` (see the module docstring); returns realised counts.

    clean, toxic: documents (texts or `Document`s). The clean stream is read in order and only as far as
      needed; the toxic one through a seeded shuffle buffer of `shuffle_buffer` documents, and not at
      all at ratio 0.
    ratio: toxic share of the mixture's tokens, percent in [0, 100). clean_tokens: C.
    on_short: what a toxic stream that runs out before its budget does: 'error' (ConfigError naming
      `toxic_name`, suggesting `repeat_hint` if given) or 'repeat' (read it again, at most `max_repeats`
      more times, with a warning; `toxic` must then be re-iterable, e.g. a list). A short clean stream
      is always an error.
    dtype: the shard dtype; None picks uint16 when the vocabulary fits, else uint32.
    taken: if given, a Counter that receives the documents taken per (part, tags), part "clean" | "toxic".
    span_loss: if given, the tokens of the documents' `spans` are marked in mask shards and the index
      records it (e.g. {"unlikelihood": 0.0}) for the training loss.
    """
    _check_arguments(ratio, clean_tokens, shard_tokens, batch_size, on_short, shuffle_buffer, max_repeats)
    out = Path(out)
    start_afresh(out)
    if on_short == "repeat" and ratio > 0 and iter(toxic) is toxic:
        raise ConfigError(f"{toxic_name}: on_short='repeat' needs a re-iterable source (a list, or an object "
                          f"whose __iter__ starts over), not a one-pass iterator")
    token_type = token_dtype(tokenizer, dtype)
    eos = tokenizer.token_to_id(EOS)
    if eos is None:
        raise ConfigError(f"the tokenizer lacks the end-of-document token {EOS}")
    out.mkdir(parents=True, exist_ok=True)

    clean_docs = _Documents(((doc, False) for doc in clean), tokenizer, eos, token_type, batch_size)
    toxic_docs = _Documents(_toxic_passes(toxic, seed, shuffle_buffer, 1 + (max_repeats if on_short == "repeat" else 0)),
                            tokenizer, eos, token_type, batch_size)
    schedule = random.Random(f"schedule:{seed}")
    counts = {"clean_tokens": 0, "toxic_tokens": 0, "clean_docs": 0, "toxic_docs": 0, "toxic_repeats": 0}
    taken = Counter() if taken is None else taken
    toxic_target = toxic_tokens_for(clean_tokens, ratio)  # final once the clean tokens are realised
    writer = _ShardWriter(out, token_type, shard_tokens)
    masks = _ShardWriter(out, np.dtype(np.uint8), shard_tokens, MASK_SHARD) if span_loss is not None else None
    dropped = Counter()  # (part, "tokens" | "docs") of the documents tagged DROPPED
    bar = tqdm(total=round(clean_tokens + toxic_target), unit="tok", unit_scale=True, desc="pack mixture")
    while True:
        clean_due = max(clean_tokens - counts["clean_tokens"], 0)
        toxic_due = max(toxic_target - counts["toxic_tokens"], 0)
        if clean_due == 0 and toxic_due == 0:
            break
        take_toxic = toxic_due > 0 and schedule.random() * (clean_due + toxic_due) < toxic_due
        part, docs = ("toxic", toxic_docs) if take_toxic else ("clean", clean_docs)
        document = docs.next()
        if document is None:
            raise ConfigError(_short_message(part, clean_name if part == "clean" else toxic_name, counts, clean_tokens,
                                             toxic_target, on_short, max_repeats, repeat_hint))
        tokens, repeated, tags, mask = document
        if repeated:
            if counts["toxic_repeats"] == 0:
                log.warning("%s ran short: the mixture repeats its documents (counted as mix_toxic_repeats)",
                            toxic_name)
            counts["toxic_repeats"] += 1
        counts[f"{part}_tokens"] += tokens.size
        counts[f"{part}_docs"] += 1
        taken[part, tags] += 1
        if part == "clean" and counts["clean_tokens"] >= clean_tokens:
            toxic_target = round(toxic_tokens_for(counts["clean_tokens"], ratio))
        bar.update(tokens.size)
        if DROPPED in tags:
            dropped[part, "tokens"] += tokens.size
            dropped[part, "docs"] += 1
            continue
        writer.write(tokens)
        if masks is not None:
            masks.write(np.zeros(tokens.size, np.uint8) if mask is None else mask)
    bar.close()
    lengths = writer.close()
    if masks is not None:
        masks.close()
    for (part, what), n in dropped.items():  # the mixture holds what was not dropped
        counts[f"{part}_{what}"] -= n
    total = counts["clean_tokens"] + counts["toxic_tokens"]
    metrics = {
        "mix_clean_tokens": counts["clean_tokens"],
        "mix_toxic_tokens": counts["toxic_tokens"],
        "mix_total_tokens": total,
        "mix_realised_ratio": 100 * counts["toxic_tokens"] / total,
        "mix_clean_docs": counts["clean_docs"],
        "mix_toxic_docs": counts["toxic_docs"],
        "mix_toxic_repeats": counts["toxic_repeats"],
    }
    metrics.update({f"mix_dropped_{part}_{what}": n for (part, what), n in sorted(dropped.items())})
    write_index(out, token_type, eos, lengths, metrics, extra={"span_loss": span_loss} if span_loss is not None else None)
    return metrics


def start_afresh(out: Path) -> None:
    """Make `out` ready for a packing: a complete folder (with its index) is refused; the shards of an
    interrupted one (killed, pre-empted: the stage cache hands its `.partial` folder back) are deleted, so a
    re-run starts over by itself and writes what an uninterrupted run writes (the packing is deterministic)."""
    if (out / INDEX).exists():
        raise ConfigError(f"{out}: already holds a complete packing ({INDEX}); pack into an empty folder")
    leftovers = sorted([*out.glob("tokens-*.bin"), *out.glob("masks-*.bin")]) if out.is_dir() else []
    if leftovers:
        log.warning("%s: %d shard files of an interrupted packing; starting it over", out, len(leftovers))
        for shard in leftovers:
            shard.unlink()


def write_index(out: Path, token_type: np.dtype, eos: int, lengths: list[int], counts: dict,
                extra: dict | None = None) -> None:
    """`index.json`, last and atomic: the folder is complete from here on. `extra`: more fields (span_loss)."""
    index = {"dtype": token_type.name, "eos_id": eos, "shards": [{"file": SHARD.format(i), "tokens": n}
                                                                  for i, n in enumerate(lengths)],
             "total_tokens": int(sum(lengths)), "counts": counts, **(extra or {})}
    (out / f"{INDEX}.tmp").write_text(json.dumps(index, indent=1))
    os.replace(out / f"{INDEX}.tmp", out / INDEX)


def _check_arguments(ratio, clean_tokens, shard_tokens, batch_size, on_short, shuffle_buffer, max_repeats) -> None:
    if not 0 <= ratio < 100:
        raise ConfigError(f"ratio={ratio}, expected a percentage in [0, 100)")
    for name, value in (("clean_tokens", clean_tokens), ("shard_tokens", shard_tokens), ("batch_size", batch_size),
                        ("shuffle_buffer", shuffle_buffer)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r}, expected a positive integer")
    if on_short not in ("error", "repeat"):
        raise ConfigError(f"on_short={on_short!r}, expected 'error' or 'repeat'")
    if max_repeats < 0:
        raise ConfigError(f"max_repeats={max_repeats}, expected at least 0")


def _short_message(part, name, counts, clean_tokens, toxic_target, on_short, max_repeats, repeat_hint) -> str:
    target = clean_tokens if part == "clean" else round(toxic_target)
    message = (f"{name} ran out after {counts[f'{part}_docs']} documents, {counts[f'{part}_tokens']} tokens; "
               f"the mixture needs {target} {part} tokens")
    if part == "toxic":
        message += (f" (read {max_repeats} extra times)" if on_short == "repeat"
                    else ": enlarge it, lower the ratio or clean_tokens"
                    + (f", or set {repeat_hint}" if repeat_hint else ""))
    return message


def _toxic_passes(docs: Iterable[str | Document], seed: int, buffer: int,
                  passes: int) -> Iterator[tuple[str | Document, bool]]:
    """(document, is_repeat) over up to `passes` seeded shuffles of `docs`, each started only when the previous ends.

    Shuffling pass by pass keeps repeats out of the mixture until every document was used once.
    """
    for number in range(passes):
        empty = True
        for doc in shuffled(docs, f"toxic-documents:{seed}:{number}", buffer):
            empty = False
            yield doc, number > 0
        if empty:
            return


class _Documents:
    """Documents of a stream, tokenised in batches, each with EOS appended: (ids, is_repeat, tags, mask),
    mask None unless the document has `spans` (then 1 at each token overlapping one)."""

    def __init__(self, docs: Iterator[tuple[str | Document, bool]], tokenizer: Tokenizer, eos: int, dtype: np.dtype,
                 batch_size: int):
        self.docs, self.tokenizer, self.eos, self.dtype, self.batch_size = docs, tokenizer, eos, dtype, batch_size
        self.batch: list[np.ndarray] = []
        self.flags: list[bool] = []
        self.tags: list[frozenset[str]] = []
        self.masks: list[np.ndarray | None] = []
        self.position = 0

    def next(self) -> tuple[np.ndarray, bool, frozenset[str], np.ndarray | None] | None:
        if self.position == len(self.batch) and not self._read_batch():
            return None
        self.position += 1
        i = self.position - 1
        return self.batch[i], self.flags[i], self.tags[i], self.masks[i]

    def _read_batch(self) -> bool:
        pairs = [(as_document(doc), repeated) for _, (doc, repeated) in zip(range(self.batch_size), self.docs)]
        if not pairs:
            return False
        # encode_batch_fast: the same ids as encode_batch, without computing character offsets
        documents = [encoding.ids for encoding in
                     self.tokenizer.encode_batch_fast([doc.text for doc, _ in pairs], add_special_tokens=False)]
        for ids in documents:
            ids.append(self.eos)
        ends = np.cumsum([len(ids) for ids in documents])
        tokens = np.fromiter(chain.from_iterable(documents), dtype=np.int64, count=int(ends[-1]))
        if tokens.max() > np.iinfo(self.dtype).max:
            raise ConfigError(f"the tokenizer produced id {tokens.max()}, beyond {self.dtype.name}")
        self.batch = np.split(tokens.astype(self.dtype), ends[:-1])
        self.flags = [repeated for _, repeated in pairs]
        self.tags = [doc.tags for doc, _ in pairs]
        self.masks = [_span_mask(self.tokenizer, doc, len(ids)) if doc.spans else None
                      for (doc, _), ids in zip(pairs, documents)]
        self.position = 0
        return True


def _span_mask(tokenizer: Tokenizer, doc: Document, n_tokens: int) -> np.ndarray:
    """1 at each token of `doc` (EOS last, never marked) whose characters overlap one of its spans."""
    offsets = np.array(tokenizer.encode(doc.text, add_special_tokens=False).offsets, dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(n_tokens, np.uint8)
    for start, end in doc.spans:
        mask[:len(offsets)] |= ((offsets[:, 0] < end) & (offsets[:, 1] > start)).astype(np.uint8)
    return mask


class _ShardWriter:
    """Appends tokens to shard files of `shard_tokens` each, gathering writes of FLUSH_TOKENS."""

    def __init__(self, out: Path, dtype: np.dtype, shard_tokens: int, name: str = SHARD):
        self.out, self.dtype, self.shard_tokens, self.name = out, dtype, shard_tokens, name
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.lengths: list[int] = []
        self.file = None

    def write(self, tokens: np.ndarray) -> None:
        self.pending.append(tokens)
        self.pending_tokens += tokens.size
        if self.pending_tokens >= FLUSH_TOKENS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_tokens:
            return
        data = np.concatenate(self.pending).astype(self.dtype.newbyteorder("<"), copy=False)
        self.pending, self.pending_tokens = [], 0
        while data.size:
            if self.file is None or self.lengths[-1] == self.shard_tokens:
                self._next_shard()
            room = self.shard_tokens - self.lengths[-1]
            self.file.write(data[:room].tobytes())
            self.lengths[-1] += min(room, data.size)
            data = data[room:]

    def _next_shard(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file = open(self.out / self.name.format(len(self.lengths)), "wb")
        self.lengths.append(0)

    def close(self) -> list[int]:
        self._flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        return self.lengths
