"""Toxicity scores kept on disk, so that no text is scored twice by one scorer: a sqlite table of
scores by a hash of (what decides the score, text), shared by every process of a job root.

Two users: the Perspective scorer (detox.evaluation.perspective, one paid request per text) and
`CachedScorer`, which wraps any scorer for the streams scored in bulk (MEDA's and INST's annotation,
SFT's filter): every mixture of a study reads the same clean documents, so each is scored once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

Scorer = Callable[[Sequence[str]], np.ndarray]


class ScoreCache:
    """Scores by key in sqlite (WAL mode: readers do not block the one writer, so the jobs of a sweep
    share it); a score is committed as soon as it is put, with the time it was scored (`scored_at`, unix
    seconds; NULL in a table made before it was kept). Opened for one call and closed after, so a scorer
    holds no connection (it stays picklable)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None)  # autocommit; wait on a busy writer
        # Two processes switching a new database to WAL at once can fail at once with "database is locked"
        # (sqlite's busy wait does not cover that case), so the set-up is done under a file lock.
        with FileLock(str(path) + ".lock"):
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL, "
                            "scored_at REAL)")
            if "scored_at" not in {row[1] for row in self.db.execute("PRAGMA table_info(scores)")}:
                self.db.execute("ALTER TABLE scores ADD COLUMN scored_at REAL")  # a cache made before it was kept

    def get(self, key: str) -> float | None:
        row = self.db.execute("SELECT score FROM scores WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def put(self, key: str, score: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO scores (key, score, scored_at) VALUES (?, ?, ?)",
                        (key, score, time.time()))

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        """The scores of those `keys` that are cached."""
        found = {}
        for start in range(0, len(keys), 500):  # below sqlite's limit of bound parameters
            chunk = list(keys[start:start + 500])
            query = f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})"
            found.update((key, float(score)) for key, score in self.db.execute(query, chunk))
        return found

    def put_many(self, scores: dict[str, float]) -> None:
        """Store a batch of scores in one transaction (one commit, not one per score)."""
        now = time.time()
        self.add_rows([(key, score, now) for key, score in scores.items()], replace=True)

    def add_rows(self, rows: Sequence[tuple[str, float, float | None]], replace: bool) -> int:
        """Store (key, score, scored_at) rows in one transaction; with `replace` false a key already kept
        keeps its score. How many rows were written."""
        before = self.db.total_changes
        self.db.execute("BEGIN")
        try:
            self.db.executemany(f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO scores (key, score, scored_at) "
                                "VALUES (?, ?, ?)", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return self.db.total_changes - before

    def rows(self):
        """Every (key, score, scored_at) kept, by key."""
        return self.db.execute("SELECT key, score, scored_at FROM scores ORDER BY key")

    def close(self) -> None:
        self.db.close()


def text_key(identity: dict, text: str) -> str:
    """The cache key of `text` scored by the scorer `identity` describes (what decides its scores)."""
    return hashlib.sha256(json.dumps({"scorer": identity, "text": text}, sort_keys=True).encode()).hexdigest()


class CachedScorer:
    """`scorer` with its scores kept in the sqlite file `path` under `text_key(identity, text)`: each call
    scores only the texts not cached yet (in one call of `scorer`) and stores their scores. Only a hash
    of a text is stored, never the text. `metrics()` are the wrapped scorer's."""

    def __init__(self, scorer: Scorer, identity: dict, path: Path):
        self.scorer, self.identity, self.path = scorer, identity, path

    def metrics(self) -> dict[str, float]:
        metrics = getattr(self.scorer, "metrics", None)
        return metrics() if callable(metrics) else {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        scorer, identity = self.scorer, self.identity
        keys = [text_key(identity, text) for text in texts]
        cache = ScoreCache(self.path)
        try:
            known = cache.get_many(sorted(set(keys)))
            text_of = dict(zip(keys, texts))
            missing = [key for key in dict.fromkeys(keys) if key not in known]  # each unknown text once
            if missing:
                new = np.asarray(scorer([text_of[key] for key in missing]), dtype=float)
                if new.shape != (len(missing),):
                    raise ValueError(f"the scorer returned {new.shape} scores for {len(missing)} texts")
                if not ((new >= 0) & (new <= 1)).all():  # NaN fails too: nothing outside [0, 1] is kept
                    raise ValueError(f"the scorer gave a score outside [0, 1]: {new[~((new >= 0) & (new <= 1))][0]}")
                fresh = dict(zip(missing, new.tolist()))
                cache.put_many(fresh)
                known.update(fresh)
        finally:
            cache.close()
        return np.array([known[key] for key in keys], dtype=float)
