"""The sources stage's folder: one JSON-lines file per part, read back by every later stage.

Every source kind writes the evaluation parts (`heldout`, `toxigen`, `rtp`) and may write the others;
the training parts (`clean`, `toxic`) reach the packer as the kind's documents (detox.data.sources).
"""

from __future__ import annotations

from pathlib import Path

from detox.core.jsonl import read_jsonl, write_jsonl
from detox.core.schema import ConfigError

PARTS = ("clean", "toxic", "heldout", "toxigen", "rtp")  # the world and local files write every one
DOCUMENT_PARTS = ("clean", "toxic", "heldout", "heldout_hostile", "probe")  # {"text": ...}; every other part, a
# prompt set or the preference pairs, carries {"prompt": ...}, so a new prompt set needs no entry here
PART_MEANING = {  # what an optional part (one a kind need not write) holds, for the error of a method that needs it
    "heldout_hostile": "held-out text in hostile contexts",
    "probe": "labelled texts {\"text\", \"label\": 0|1} to probe",
    "preference": "{\"prompt\", \"chosen\", \"rejected\"} lines",
}


def text_field(part: str) -> str:
    """Document files carry {"text": ...}; prompt files (and preference pairs) carry {"prompt": ...}."""
    return "text" if part in DOCUMENT_PARTS else "prompt"


def load_part(sources: Path, part: str) -> list[dict]:
    return read_jsonl(sources / f"{part}.jsonl", text_field(part))


def write_part(sources: Path, part: str, rows: list[dict]) -> None:
    write_jsonl(sources / f"{part}.jsonl", rows)


def has_part(sources: Path, part: str) -> bool:
    return (sources / f"{part}.jsonl").is_file()


def heldout_texts(sources: Path) -> dict[str, list[str]]:
    """The held-out texts the CE loss is measured on: "clean", and "hostile" where the sources have them."""
    parts = {"clean": "heldout", "hostile": "heldout_hostile"}
    return {name: [row["text"] for row in load_part(sources, part)] for name, part in parts.items()
            if name == "clean" or has_part(sources, part)}


def read_part_file(part: str, path: str) -> list[dict]:
    """The rows of a part's JSON-lines file, checked as far as the file alone can be: every row carries
    its text field; probe texts a 0/1 label, both classes present; preference pairs a non-empty
    `chosen` and `rejected` string. A missing, empty or malformed file is one ConfigError naming it."""
    rows = read_jsonl(path, text_field(part))
    if part == "probe":
        check_probe_rows(rows, path)
    elif part == "preference":
        for number, row in enumerate(rows, 1):
            bad = [key for key in ("chosen", "rejected") if not isinstance(row.get(key), str) or not row[key].strip()]
            if bad:
                raise ConfigError(f"{path}: preference pair {number} lacks a non-empty string {bad[0]!r} "
                                  "(expected {\"prompt\", \"chosen\", \"rejected\"})")
    return rows


def check_probe_rows(rows: list[dict], where: str) -> None:
    """Probe texts carry a 0/1 `label`, both classes present."""
    for number, row in enumerate(rows, 1):
        if row.get("label") not in (0, 1):
            raise ConfigError(f"{where}: probe text {number} has label {row.get('label')!r}, expected 0 or 1")
    if len({row["label"] for row in rows}) < 2:
        raise ConfigError(f"{where}: every probe text has label {rows[0]['label']}; probing needs both classes")
