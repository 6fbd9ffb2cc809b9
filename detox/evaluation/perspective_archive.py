"""Perspective's score cache as a dated archive (`detox-perspective-cache export|import`): scores obtained
before the API closes (31 December 2026) stay usable, keyed by text hash as the cache keys them."""

from __future__ import annotations

import json
from pathlib import Path

from detox.core.schema import ConfigError
from detox.core.score_cache import ScoreCache
from detox.evaluation.perspective import ATTRIBUTE, CACHE_FILE

ARCHIVE_FORMAT = "detox-perspective-scores/1"


def export_scores(state_dir: str | Path, out: str | Path) -> Path:
    """The score cache of `state_dir` (`<root>/cache/perspective`) as a dated archive in the folder `out`:
    `perspective-scores-<date>.jsonl.gz`, a header line {"format", "exported", "attribute", "key" (how a key
    is made), "scores", "first_scored", "last_scored"} then one {"key", "score", "scored_at"} a line: hashes
    of the requests and their scores, never a text. Scores obtained before the API closes stay usable."""
    import datetime
    import gzip

    cache_path = Path(state_dir) / CACHE_FILE
    if not cache_path.is_file():
        raise ConfigError(f"{cache_path}: no Perspective score cache (a job with scorer=perspective writes it)")
    cache = ScoreCache(cache_path)
    try:
        rows = list(cache.rows())
    finally:
        cache.close()
    now = datetime.datetime.now(datetime.timezone.utc)
    dates = [at for _, _, at in rows if at is not None]
    day = lambda at: datetime.datetime.fromtimestamp(at, datetime.timezone.utc).date().isoformat()  # noqa: E731
    header = {"format": ARCHIVE_FORMAT, "exported": now.isoformat(timespec="seconds"), "attribute": ATTRIBUTE,
              "key": "sha256 of the JSON {text as sent, attribute, languages, url}, keys sorted",
              "scores": len(rows), "first_scored": day(min(dates)) if dates else None,
              "last_scored": day(max(dates)) if dates else None}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"perspective-scores-{now.date().isoformat()}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write(json.dumps(header) + "\n")
        file.writelines(json.dumps({"key": key, "score": score, "scored_at": at}) + "\n" for key, score, at in rows)
    return path


def import_scores(archive: str | Path, state_dir: str | Path) -> tuple[int, int]:
    """Add an archive's scores to the cache of `state_dir`; a key the cache holds keeps its own score.
    (added, already kept)."""
    import gzip

    with gzip.open(archive, "rt", encoding="utf-8") as file:
        header = json.loads(file.readline() or "{}")
        if header.get("format") != ARCHIVE_FORMAT or header.get("attribute") != ATTRIBUTE:
            raise ConfigError(f"{archive}: not a Perspective score archive ({ARCHIVE_FORMAT}, {ATTRIBUTE})")
        rows = []
        for number, line in enumerate(file, 2):
            row = json.loads(line)
            if not (isinstance(row.get("key"), str) and isinstance(row.get("score"), (int, float))
                    and 0 <= row["score"] <= 1):
                raise ConfigError(f"{archive}:{number}: expected {{\"key\", \"score\" in [0, 1], \"scored_at\"}}")
            rows.append((row["key"], float(row["score"]), row.get("scored_at")))
    cache = ScoreCache(Path(state_dir) / CACHE_FILE)
    try:
        added = cache.add_rows(rows, replace=False)
    finally:
        cache.close()
    return added, len(rows) - added


def cache_main(argv: list[str] | None = None) -> None:
    """detox-perspective-cache: export a root's Perspective score cache as a dated archive, or import one."""
    import argparse

    parser = argparse.ArgumentParser(prog="detox-perspective-cache", description=cache_main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write <out>/perspective-scores-<date>.jsonl.gz")
    export.add_argument("--root", default="outputs", help="the jobs' root (its cache/perspective/ is read)")
    export.add_argument("--out", default=".", help="the folder the archive goes to")
    load = commands.add_parser("import", help="add an archive's scores to a root's cache")
    load.add_argument("archive")
    load.add_argument("--root", default="outputs", help="the jobs' root (its cache/perspective/ is written)")
    args = parser.parse_args(argv)
    state_dir = Path(args.root).resolve() / "cache" / "perspective"
    try:
        if args.command == "export":
            print(f"Perspective scores exported to {export_scores(state_dir, args.out)}")
        else:
            added, kept = import_scores(args.archive, state_dir)
            print(f"{added} Perspective score(s) added to {state_dir / CACHE_FILE}; {kept} already there kept")
    except ConfigError as error:
        parser.error(str(error))


if __name__ == "__main__":
    cache_main()
