"""The data-side rivals of keeping toxic data, as transforms of the training streams on their way into
the one packer (detox.data.documents.Transform, as MEDA's and INST's annotation):

* `Filter` (method=filter): a document whose toxicity score reaches the threshold is dropped. A clean
  document is skipped, so the clean token budget is still met by the documents below it (as the paper
  keeps C fixed); a toxic one is tagged DROPPED: it counts towards the ratio's toxic budget but is not
  written, so the mixture is the one the ratio selects less what the filter removes.
* `SpanMask` (method=loss_mask; SLUNG, Wang et al. 2025): every sentence whose score reaches the
  threshold becomes a span whose tokens stay in the context but carry no loss (or an unlikelihood
  loss), marked by the packer in mask shards beside the tokens.

Scores: a document's or a sentence's, the job's scorer's (passed in: this package does not import the
evaluation), the document's corpus score where it has one (detox.data.annotate.scored_documents). A
sentence runs from a non-space character to its closing . ! or ? (or the line's end): on the embedded
world, with the oracle, that is exactly the insult sentence (" ." ends every sentence of its grammar).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np

from detox.core.schema import ConfigError
from detox.data.annotate import scored_documents
from detox.data.packing import DROPPED
from detox.data.documents import Document, as_document, taken_docs

SENTENCE = re.compile(r"\S[^.!?\n]*(?:[.!?]+|$)", re.MULTILINE)
MASKED = "span_masked"  # the tag of a document with at least one masked span

Scorer = Callable[[list[str]], np.ndarray]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of `text`'s sentences."""
    return [match.span() for match in SENTENCE.finditer(text)]


def _check(batch_size: int, threshold: float) -> None:
    if batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size}: must be positive")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"threshold={threshold}: must lie in [0, 1]")


class Filter:
    """Drops the documents scored at or above `threshold` (module docstring)."""

    def __init__(self, scorer: Scorer, batch_size: int, threshold: float):
        _check(batch_size, threshold)
        self.scorer, self.batch_size, self.threshold = scorer, batch_size, threshold
        self.clean_read = Counter()  # clean documents the filter read: "kept" | "dropped"

    def __call__(self, part: str, documents: Iterable[str | Document]) -> Iterable[Document]:
        return _Rereadable(lambda: self._filter(part, documents))

    def _filter(self, part: str, documents) -> Iterator[Document]:
        for doc, score in scored_documents(documents, self.scorer, self.batch_size):
            drop = score >= self.threshold
            if part == "clean":
                self.clean_read["dropped" if drop else "kept"] += 1
                if not drop:
                    yield doc
            else:
                yield doc._replace(tags=doc.tags | {DROPPED}) if drop else doc

    def metrics(self, taken: Counter) -> dict:
        """filter_toxic_dropped_share: the share of the toxic documents the ratio selected that were dropped;
        filter_clean_dropped_share: the share of the clean documents read that were skipped."""
        metrics = {}
        if total := taken_docs(taken, "toxic"):
            metrics["filter_toxic_dropped_share"] = taken_docs(taken, "toxic", has=(DROPPED,)) / total
        if read := sum(self.clean_read.values()):
            metrics["filter_clean_dropped_share"] = self.clean_read["dropped"] / read
        return metrics


class SpanMask:
    """Marks the sentences scored at or above `threshold` as spans without loss (module docstring)."""

    def __init__(self, scorer: Scorer, batch_size: int, threshold: float):
        _check(batch_size, threshold)
        self.scorer, self.batch_size, self.threshold = scorer, batch_size, threshold

    def __call__(self, part: str, documents: Iterable[str | Document]) -> Iterable[Document]:
        return _Rereadable(lambda: self._mask(documents))

    def _mask(self, documents) -> Iterator[Document]:
        documents = iter(documents)
        while batch := [as_document(doc) for doc in itertools.islice(documents, self.batch_size)]:
            spans = [sentence_spans(doc.text) for doc in batch]
            sentences = [doc.text[a:b] for doc, doc_spans in zip(batch, spans) for a, b in doc_spans]
            scores = iter(np.asarray(self.scorer(sentences), dtype=float) if sentences else [])
            for doc, doc_spans in zip(batch, spans):
                toxic = tuple(span for span in doc_spans if next(scores) >= self.threshold)
                yield doc._replace(tags=doc.tags | {MASKED}, spans=toxic) if toxic else doc

    def metrics(self, taken: Counter) -> dict:
        """masked_<part>_doc_share: the share of the part's documents with at least one masked span."""
        return {f"masked_{part}_doc_share": taken_docs(taken, part, has=(MASKED,)) / total
                for part in ("clean", "toxic") if (total := taken_docs(taken, part))}


class _Rereadable:
    """Re-iterable: each pass transforms its documents again (a short toxic source may be re-read)."""

    def __init__(self, make: Callable[[], Iterator[Document]]):
        self.make = make

    def __iter__(self) -> Iterator[Document]:
        return self.make()
