"""The stage cache: each stage's output lives under a key derived from exactly the config that
determines it (plus the keys of the stages it reads), so jobs that share a stage's inputs share its
output, and a re-run sweep redoes only what did not finish.

Layout under `root`: `<stage>/<key>/` is a finished artifact (it exists only once whole: the stage
writes into `<stage>/<key>.partial/` and that folder is renamed when the build returns, an atomic
step on one file system); `<stage>/<key>.lock` is a file lock, so two jobs never build the same
artifact at once. The partial folder survives a kill, which lets pre-training resume from its
checkpoints there. (What keys a local file by its content: detox.core.filehash.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from detox.core.artifacts import SPEC


def stable_key(spec: dict) -> str:
    """A short hash of a JSON-serialisable spec, independent of key order."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_key(stage: str, spec: dict) -> str:
    """The key of `stage`'s output for `spec` (which holds the keys of the stages it reads)."""
    return stable_key({"stage": stage, **spec})


@dataclass
class Artifact:
    stage: str
    key: str
    path: Path
    hit: bool  # True when it was already complete and nothing was built


class StageCache:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def work_path(self, stage: str, key: str) -> Path:
        """Where the artifact is built (and a killed build's partial work stays)."""
        return self.path(stage, key).with_name(key + ".partial")

    def get_or_build(self, stage: str, spec: dict, build: Callable[[Path], None]) -> Artifact:
        """Return the artifact of `stage` for `spec`, building it with `build(work_dir)` if missing."""
        key = stage_key(stage, spec)
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            return Artifact(stage, key, final, hit=True)
        with FileLock(str(final) + ".lock"):
            if final.is_dir():  # another job built it while we waited for the lock
                return Artifact(stage, key, final, hit=True)
            work = self.work_path(stage, key)
            work.mkdir(exist_ok=True)
            build(work)
            (work / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
            work.rename(final)
        return Artifact(stage, key, final, hit=False)
