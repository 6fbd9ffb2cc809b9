"""Pre-training baselines that tell the model how toxic each document is (the paper's MEDA and INST,
after Prabhumoye et al. 2023, "Adding instructions during pretraining"): every pre-training document
is prefixed with an annotation of its toxicity score, and at evaluation time every prompt is prefixed
with the annotation of a non-toxic document, so the model is asked for non-toxic text.

The original templates are not public. The ones below are OUR ASSUMPTIONS, chosen so that each
prefix reads as a plausible first line of a document:

* MEDA (metadata): ``"toxicity: {score:.1f}\\n"``, the score rounded to one decimal
  (Python's formatting: 0.25 -> "0.2", 0.35 -> "0.3", 0.96 -> "1.0"). Evaluation prefix:
  ``"toxicity: 0.0\\n"``.
* INST (instruction): one sentence naming the document's toxicity band, then a newline. Bands are
  half-open intervals of the score, the middle edge being the usual toxic threshold of 0.5:
  [0, 0.25) "This text is not toxic.", [0.25, 0.5) "This text is slightly toxic.",
  [0.5, 0.75) "This text is toxic.", [0.75, 1] "This text is very toxic.". Evaluation prefix:
  ``"This text is not toxic.\\n"``.

The annotation goes at the start of the document, i.e. right after the end-of-document token that
precedes every document in the packed mixture and every evaluation prompt.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from detox.config import ConfigError
from detox.data.sources import Document, as_document, taken_docs

SCHEMES = ("meda", "inst")

# Assumption (the paper's template is not public): the score as metadata on the first line.
MEDA_TEMPLATE = "toxicity: {score:.1f}\n"
# Assumption (the paper's wording is not public): (lower edge of the band, instruction), ascending.
INST_BANDS = (
    (0.0, "This text is not toxic."),
    (0.25, "This text is slightly toxic."),
    (0.5, "This text is toxic."),
    (0.75, "This text is very toxic."),
)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"annotation scheme {scheme!r} is unknown; implemented: {', '.join(SCHEMES)}")


def _check_score(score: float) -> None:
    if not 0.0 <= score <= 1.0:  # NaN fails too
        raise ValueError(f"toxicity score {score!r} is not in [0, 1]")


def prefix(score: float, scheme: str) -> str:
    """The annotation line (newline included) of a document with toxicity `score`."""
    _check_scheme(scheme)
    _check_score(score)
    if scheme == "meda":
        return MEDA_TEMPLATE.format(score=score)
    instruction = next(text for edge, text in reversed(INST_BANDS) if score >= edge)
    return instruction + "\n"


def annotate(text: str, score: float, scheme: str) -> str:
    """`text` with the annotation of its toxicity `score` in front."""
    return prefix(score, scheme) + text


def eval_prefix(scheme: str) -> str:
    """What goes before every evaluation prompt: the annotation of a fully non-toxic document."""
    return prefix(0.0, scheme)


def annotate_documents(rows: Iterable[dict], scorer: Callable[[list[str]], np.ndarray], scheme: str,
                       batch_size: int) -> Iterator[dict]:
    """Score the `text` of each row in batches and yield the row with `text` annotated and the score
    under `toxicity` (other fields kept). Bad arguments are refused at the call, before any row is read."""
    _check_scheme(scheme)
    if batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size}: must be positive")
    return _annotated(rows, scorer, scheme, batch_size)


def _annotated(rows: Iterable[dict], scorer, scheme: str, batch_size: int) -> Iterator[dict]:
    rows, done = iter(tqdm(rows, desc=f"annotating ({scheme})", leave=False)), 0
    while batch := list(itertools.islice(rows, batch_size)):
        scores = np.asarray(scorer([row["text"] for row in batch]), dtype=float)
        if scores.shape != (len(batch),):
            raise ValueError(f"the scorer returned {scores.shape} scores for {len(batch)} texts")
        outside = np.flatnonzero(~((scores >= 0) & (scores <= 1)))
        if outside.size:
            raise ValueError(f"the scorer gave document {done + outside[0]} the score {scores[outside[0]]}, "
                             "outside [0, 1]")
        done += len(batch)
        for row, score in zip(batch, scores):
            yield {**row, "text": annotate(row["text"], float(score), scheme), "toxicity": float(score)}


SCORED_TOXIC = "scored_toxic"  # the tag of an annotated document that the scorer rated toxic


class Annotation:
    """The documents' annotation as a transform of the training streams before packing
    (detox.data.sources.Transform): each document scored in batches and its annotation put in front;
    those at or above `threshold` tagged SCORED_TOXIC, so the mixture's toxic shares count what it took."""

    def __init__(self, scorer: Callable[[list[str]], np.ndarray], scheme: str, batch_size: int, threshold: float):
        _check_scheme(scheme)
        if batch_size <= 0:
            raise ConfigError(f"batch_size={batch_size}: must be positive")
        self.scorer, self.scheme, self.batch_size, self.threshold = scorer, scheme, batch_size, threshold

    def __call__(self, part: str, documents: Iterable[str | Document]) -> Iterable[Document]:
        return _AnnotatedStream(self, documents)

    def metrics(self, taken: Counter) -> dict:
        """annotated_<part>_toxic_share: the share of the part's documents in the mixture scored toxic."""
        return {f"annotated_{part}_toxic_share": taken_docs(taken, part, has=(SCORED_TOXIC,)) / taken_docs(taken, part)
                for part in ("clean", "toxic") if taken_docs(taken, part)}


class _AnnotatedStream:
    """Re-iterable: each pass annotates its documents again (a short toxic source may be re-read)."""

    def __init__(self, annotation: Annotation, documents: Iterable[str | Document]):
        self.annotation, self.documents = annotation, documents

    def __iter__(self) -> Iterator[Document]:
        a = self.annotation
        rows = ({"text": doc.text, "tags": doc.tags} for doc in map(as_document, self.documents))
        for row in _annotated(rows, a.scorer, a.scheme, a.batch_size):
            tags = row["tags"] | {SCORED_TOXIC} if row["toxicity"] >= a.threshold else row["tags"]
            yield Document(row["text"], tags)
