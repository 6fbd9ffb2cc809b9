"""A training document as the one packer takes it, and the transform a method may apply to the streams
before packing (MEDA/INST's annotation, filter's drops, loss_mask's spans). Light: no numpy."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, NamedTuple, Protocol


class Document(NamedTuple):
    """A training document as the packer takes it: its text and tags (e.g. the world's `hostile`)."""

    text: str
    tags: frozenset[str] = frozenset()
    toxicity: float | None = None  # the score the corpus itself gives it (a /pol/ post's Perspective TOXICITY), if any
    spans: tuple[tuple[int, int], ...] = ()  # character spans of toxic text whose tokens carry no loss (method=loss_mask)


def as_document(item: str | Document) -> Document:
    return item if isinstance(item, Document) else Document(item)


def taken_docs(taken: Counter, part: str, has: Iterable[str] = (), lacks: Iterable[str] = ()) -> int:
    """Documents of `part` the mixture took (`taken`: the packer's counts per (part, tags)) that carry
    every tag of `has` and none of `lacks`."""
    return sum(n for (p, tags), n in taken.items() if p == part and tags.issuperset(has) and tags.isdisjoint(lacks))


class Transform(Protocol):
    """A per-document change of the training streams before packing (MEDA/INST annotate here)."""

    def __call__(self, part: str, documents: Iterable[str | Document]) -> Iterable[Document]:
        """The transformed stream; re-iterable when `documents` is (a short source may be re-read)."""

    def metrics(self, taken: Counter) -> dict:
        """Its metrics, from the documents the mixture took (counted per (part, tags))."""
