"""What keys a real corpus: the commit a hub corpus resolved to, the files of a local glob, and a corpus
stream that starts again when re-read (for the packer's repeats). Used by the corpora source kind."""

from __future__ import annotations

import hashlib

from detox.data.documents import Document

REVISIONS = "revisions.json"  # corpora: {part: {path, name, revision, commit}} of each hub corpus


def pinned(spec, resolved: dict | None):
    """`spec` (a detox.data.corpora.SourceSpec) at the commit its revision resolved to, when it pins
    none and that commit is known; otherwise `spec` as it is."""
    import dataclasses

    from detox.core.hub import UNRESOLVED

    if spec.revision is not None or not resolved or resolved.get("commit") in (None, UNRESOLVED):
        return spec
    return dataclasses.replace(spec, revision=resolved["commit"])


LISTED_FILES = 16  # a part of more files enters the key (and the MLflow param) as one digest of their list


def listed(hashes: list[tuple[str, str]]) -> list | dict:
    """A part's (file, sha256) pairs as its spec shows them: the pairs, or for a long glob (e.g. C4's
    1024 files: MLflow takes params of at most 6000 characters) their count and one sha256 of them all."""
    if len(hashes) <= LISTED_FILES:
        return hashes
    joined = "".join(f"{name}\t{digest}\n" for name, digest in hashes)
    return {"files": len(hashes), "sha256": hashlib.sha256(joined.encode()).hexdigest()}


class Reread:
    """A corpus stream of `Document`s (with the toxicity the corpus gives them, if any) that starts again
    when iterated again (so the packer can repeat a short one)."""

    def __init__(self, spec, seed: int | None = None):
        self.spec, self.seed = spec, seed

    def __iter__(self):
        from detox.data.corpora import iter_documents

        return (Document(text, toxicity=toxicity) for text, toxicity in iter_documents(self.spec, self.seed))
