"""The hub side every stage shares: the commit a revision of a hub repository (a corpus or a model)
points to, so that a key names what was read, not a branch that moves."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

UNRESOLVED = "unresolved"  # a hub revision no one could resolve to a commit (offline, not cached, unknown)
COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_commit(repo: str, revision: str | None, repo_type: str, warn: bool = True) -> str:
    """The commit `revision` (None: main) of the hub `repo_type` ("model" or "dataset") repository points
    to: a 40-hex revision as it is, else asked of the hub, else (offline) read from the local hub cache;
    UNRESOLVED when none of them knows it (the job goes on keyed by the revision's name; the log says so)."""
    if revision and COMMIT.fullmatch(revision):
        return revision
    try:
        from huggingface_hub import HfApi

        info = getattr(HfApi(), f"{repo_type}_info")  # model_info | dataset_info
        sha, reason = info(repo, revision=revision).sha, "the hub gave no commit"
    except Exception as error:  # offline, unknown repository, hub error: none of them stops the job
        sha, reason = None, f"{type(error).__name__}: {error}"
    if sha:
        log.info("%s: revision %s is commit %s", repo, revision or "main", sha)
        return sha
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"{repo_type}s--{repo.replace('/', '--')}" / "refs" / (revision or "main")
    if ref.is_file():
        return ref.read_text().strip()
    if warn:  # (a caller that says so itself, e.g. the scorer's plan line and its refusal, asks for no warning)
        log.warning("%s: revision %s not resolved (%s) and not in the local hub cache; keyed by the revision's name "
                    "(pin the revision to a commit sha for a reproducible key)", repo, revision or "main", reason)
    return UNRESOLVED
