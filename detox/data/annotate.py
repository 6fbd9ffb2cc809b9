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

Every document's score is the job's scorer's, the /pol/ posts' too: the Perspective TOXICITY their corpus
ships is another scorer's scale (and Perspective's model of 2019), and one annotation must not read two
scales. Perspective itself never annotates in bulk (a job asking for it is refused before any work).

The annotation goes at the start of the document, i.e. right after the end-of-document token that
precedes every document in the packed mixture and every evaluation prompt.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np

from detox.core.schema import ConfigError
from detox.data.documents import Document, as_document, taken_docs

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


def scored_documents(documents: Iterable[str | Document], scorer: Callable[[list[str]], np.ndarray],
                     batch_size: int) -> Iterator[tuple[Document, float]]:
    """Each document with the scorer's toxicity score, asked for each `batch_size` documents in one call
    (NaN where the scorer could not score a document: Perspective's rejected texts). Read lazily: a
    stream is scored only as far as it is consumed."""
    if batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size}: must be positive")
    return _scored(documents, scorer, batch_size)


def _scored(documents, scorer, batch_size: int) -> Iterator[tuple[Document, float]]:
    documents, done = iter(documents), 0
    while batch := [as_document(doc) for doc in itertools.islice(documents, batch_size)]:
        scores = np.asarray(scorer([doc.text for doc in batch]), dtype=float)
        if scores.shape != (len(batch),):
            raise ValueError(f"the scorer returned {scores.shape} scores for {len(batch)} texts")
        outside = np.flatnonzero((scores < 0) | (scores > 1))  # NaN is a missing score, not one outside
        if outside.size:
            raise ValueError(f"the scorer gave document {done + outside[0]} the score {scores[outside[0]]}, "
                             "outside [0, 1]")
        done += len(batch)
        yield from zip(batch, scores.tolist())


SCORED_TOXIC = "scored_toxic"  # the tag of an annotated document whose score is at or above the threshold


class Annotation:
    """The documents' annotation as a transform of the training streams before packing
    (detox.data.documents.Transform): each document's annotation put in front, made from the job's
    scorer's score, asked in batches; those at or above `threshold` tagged SCORED_TOXIC, so the
    mixture's shares count what it took. `scorer`: texts -> scores in [0, 1] (passed in by the method:
    this stage does not import the evaluation's scorers)."""

    def __init__(self, scorer: Callable[[list[str]], np.ndarray], scheme: str, batch_size: int, threshold: float):
        _check_scheme(scheme)
        if batch_size <= 0:
            raise ConfigError(f"batch_size={batch_size}: must be positive")
        self.scorer, self.scheme, self.batch_size, self.threshold = scorer, scheme, batch_size, threshold

    def __call__(self, part: str, documents: Iterable[str | Document]) -> Iterable[Document]:
        return _AnnotatedStream(self, documents)

    def metrics(self, taken: Counter) -> dict:
        """Per part of the mixture: annotated_<part>_toxic_share, the share of its documents annotated toxic."""
        metrics = {}
        for part in ("clean", "toxic"):
            if total := taken_docs(taken, part):
                metrics[f"annotated_{part}_toxic_share"] = taken_docs(taken, part, has=(SCORED_TOXIC,)) / total
        return metrics


class _AnnotatedStream:
    """Re-iterable: each pass annotates its documents again (a short toxic source may be re-read)."""

    def __init__(self, annotation: Annotation, documents: Iterable[str | Document]):
        self.annotation, self.documents = annotation, documents

    def __iter__(self) -> Iterator[Document]:
        a = self.annotation
        for doc, score in _scored(self.documents, a.scorer, a.batch_size):
            tags = doc.tags | ({SCORED_TOXIC} if score >= a.threshold else set())
            yield Document(annotate(doc.text, score, a.scheme), frozenset(tags), score)
