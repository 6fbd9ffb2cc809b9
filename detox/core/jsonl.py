"""JSON-lines files, read with errors that name the file and the line.

Written by hand rather than with `datasets.load_dataset("json")` so that a malformed line is
reported with its file and line number, before any training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from detox.core.schema import ConfigError


def json_lines(path: Path | str, what: str = "") -> Iterator[tuple[Path, int, object]]:
    """(path, line number, parsed object) of every non-blank line; a missing file or a malformed line
    is a ConfigError naming it (`what` says what the file should be)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file{f' (expected {what})' if what else ''}")
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield path, number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise ConfigError(f"{path}:{number}: malformed JSON ({error.msg})") from None


def read_jsonl(path: Path | str, field: str) -> list[dict]:
    """Every object of a JSON-lines file, each required to carry a non-empty string `field`."""
    rows = []
    for where, number, row in json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get(field), str) or not row[field].strip():
            raise ConfigError(f"{where}:{number}: expected an object with a non-empty string {field!r}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{Path(path)}: empty file, expected JSON lines with {field!r}")
    return rows


def write_jsonl(path: Path | str, rows) -> None:
    """One JSON object a line."""
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows))
