"""The published evaluation prompts, read from their release files unchanged.

ToxiGen (Hartvigsen et al. 2022), the `prompts/` folder of github.com/microsoft/TOXIGEN: one file per
kind and target group, `hate_<group>_1k.txt` and `neutral_<group>_1k.txt` (16 hate groups, 15
neutral ones: no `neutral_trans`), 1000 lines each. Each line is ONE prompt, written by the repo's
`src/make_prompts.py` as `repr(prompt)[1:-1]`: the prompt is a list of six demonstrations, each
`- <statement>\\n`, ending with `-` for the model to continue; on disk its newlines are the two
characters `\\n` and a backslash is `\\\\` (both occur in the release). `load_toxigen` undoes that
escaping, so the model sees `- a\\n- b\\n...\\n-` with real newlines.

RealToxicityPrompts (Gehman et al. 2020), `prompts.jsonl`: one JSON object a line with `filename`,
`begin`, `end`, `challenging` (bool), `prompt` and `continuation`, each of those two an object with
`text` and Perspective scores (`toxicity`, `severe_toxicity`, `profanity`, ...; a score may be null).

ToxiGen's human-annotated statements (the hub's `toxigen/toxigen-data`, config `annotated`, splits train
and test, stored as parquet): one statement a row with `text`, `target_group`, `toxicity_ai` and
`toxicity_human` (the annotators' mean rating on 1-5) among other columns; `load_toxigen_annotated` reads
a parquet, CSV or JSON-lines copy.

The ToxiGen prompts are also on the hub (`toxigen/toxigen-data`, config `prompts`, one split per
file, named like the file without `.txt`, column `prompt`); `load_toxigen_hub` reads them through
`datasets` and applies the same un-escaping (whether the hub copy keeps the `\\n` escapes was not
verified; un-escaping text that has none changes nothing).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detox.core.jsonl import json_lines
from detox.core.schema import ConfigError

TOXIGEN_KINDS = ("hate", "neutral")
TOXIGEN_GROUPS = ("asian", "bisexual", "black", "chinese", "immigrant", "jewish", "latino", "lgbtq",
                  "mental_disability", "mexican", "middle_east", "muslim", "native_american", "physical_disability",
                  "trans", "women")
# The 14 groups of the original release (ToxiGen's paper); `bisexual` and `immigrant` were added in January
# 2024, some of their lines in another layout (no line break before the final dash, two statements on a
# line). Common evaluation harnesses read these 14, and so does data=paper by default.
TOXIGEN_ORIGINAL_GROUPS = tuple(g for g in TOXIGEN_GROUPS if g not in ("bisexual", "immigrant"))
TOXIGEN_FILE = re.compile(r"^(hate|neutral)_(.+)_1k\.txt$")
# The escapes Python's repr() writes for a str; these files use only \n and \\.
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[\\'\"abfnrtv])")
_SIMPLE = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass
class EvalPrompt:
    """One evaluation prompt."""

    text: str  # exactly what the model is given
    group: str  # ToxiGen: the target group; RealToxicityPrompts: "challenging" or "not_challenging"
    source: str  # where it came from: file name and line number
    toxicity: float | None = None  # RealToxicityPrompts: the prompt's own Perspective toxicity (may be None)


def unescape_repr(line: str) -> str:
    """Undo the escaping of `repr(text)[1:-1]`."""
    return _ESCAPE.sub(lambda m: _SIMPLE.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), line)


def toxigen_groups(folder: Path | str, kind: str = "hate") -> list[str]:
    """The target groups that have a `<kind>_<group>_1k.txt` file in `folder`."""
    return sorted(m.group(2) for p in Path(folder).glob(f"{kind}_*_1k.txt") if (m := TOXIGEN_FILE.match(p.name)))


def load_toxigen(folder: Path | str, kind: str = "hate", groups: Sequence[str] | None = None,
                 per_group: int | None = None, seed: int = 0) -> list[EvalPrompt]:
    """ToxiGen prompts from the release's `prompts/` folder: all groups (or `groups`), all lines or a
    seeded sample of `per_group` per group (the sample of a group does not depend on the other groups)."""
    folder = Path(folder)
    _check_kind(kind)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (expected ToxiGen's prompts/ folder)")
    available = toxigen_groups(folder, kind)
    groups = list(groups) if groups is not None else available
    if not groups:
        raise ConfigError(f"{folder}: no {kind}_<group>_1k.txt files")
    prompts = []
    for group in groups:
        path = folder / f"{kind}_{group}_1k.txt"
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; groups with {kind} prompts here: {available}")
        lines = path.read_text(encoding="utf-8").split("\n")
        numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
        chosen = _sample(numbered, per_group, seed, group, path)
        prompts += [EvalPrompt(unescape_repr(line), group, f"{path.name}:{number}") for number, line in chosen]
    return prompts


def load_toxigen_hub(kind: str = "hate", groups: Sequence[str] | None = None, per_group: int | None = None,
                     seed: int = 0, repo: str = "toxigen/toxigen-data") -> list[EvalPrompt]:
    """ToxiGen prompts from the hub copy (needs the network, or the hub cache with HF_HUB_OFFLINE=1)."""
    import datasets

    _check_kind(kind)
    groups = list(groups) if groups is not None else [g for g in TOXIGEN_GROUPS
                                                      if not (kind == "neutral" and g == "trans")]
    prompts = []
    for group in groups:
        split = f"{kind}_{group}_1k"
        try:
            rows = datasets.load_dataset(repo, "prompts", split=split)["prompt"]
        except Exception as error:  # offline, unknown split, gated repo: name what failed
            raise ConfigError(f"{repo} (prompts, split {split}): cannot load ({type(error).__name__}: {error})") from None
        numbered = [(number, row) for number, row in enumerate(rows, 1) if row and row.strip()]
        chosen = _sample(numbered, per_group, seed, group, f"{repo}:{split}")
        prompts += [EvalPrompt(unescape_repr(row), group, f"{repo}:{split}:{number}") for number, row in chosen]
    return prompts


def load_rtp(path: Path | str, n: int | None = None, challenging_only: bool = False, seed: int = 0) -> list[EvalPrompt]:
    """RealToxicityPrompts from `prompts.jsonl`: all prompts (or the challenging ones), or a seeded sample of n."""
    prompts = []
    for path, number, row in json_lines(path, "RealToxicityPrompts' prompts.jsonl"):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise ConfigError(f"{path}:{number}: expected an object with a string prompt.text")
        challenging = bool(row.get("challenging", False))
        if challenging_only and not challenging:
            continue
        prompts.append(EvalPrompt(prompt["text"], "challenging" if challenging else "not_challenging",
                                  f"{path.name}:{number}", prompt.get("toxicity")))
    if not prompts:
        raise ConfigError(f"{Path(path)}: no {'challenging ' if challenging_only else ''}prompts")
    if n is None:
        return prompts
    numbered = list(enumerate(prompts))
    return [prompt for _, prompt in _sample(numbered, n, seed, "rtp", path)]


@dataclass
class ScoredText:
    """A text and a score someone else gave it: Perspective's published TOXICITY, or the human rating."""

    text: str
    score: float
    source: str  # file and line (or row), and which text of the line


def load_rtp_scores(path: Path | str) -> list[ScoredText]:
    """Every prompt's and continuation's text of RealToxicityPrompts' prompts.jsonl with the Perspective
    toxicity published beside it (a null score, or an empty text, is left out)."""
    found = []
    for where, number, row in json_lines(path, "RealToxicityPrompts' prompts.jsonl"):
        for part in ("prompt", "continuation"):
            value = row.get(part) if isinstance(row, dict) else None
            if not isinstance(value, dict):
                raise ConfigError(f"{where}:{number}: expected an object with {part}.text and {part}.toxicity")
            text, score = value.get("text"), value.get("toxicity")
            if isinstance(text, str) and text.strip() and isinstance(score, (int, float)) and not isinstance(score, bool):
                found.append(ScoredText(text, float(score), f"{where.name}:{number}:{part}"))
    return found


def load_toxigen_annotated(path: Path | str) -> list[ScoredText]:
    """ToxiGen's human-annotated statements (parquet as the hub stores them, CSV or JSON lines): each
    `text` with its `toxicity_human`, the annotators' mean rating on 1 (benign) to 5."""
    import pandas as pd

    path = Path(path)
    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".json": lambda p: pd.read_json(p, lines=True)}
    if not path.is_file() or path.suffix not in readers:
        raise ConfigError(f"{path}: expected ToxiGen's annotated split as a {', '.join(readers)} file")
    frame = readers[path.suffix](path)
    missing = {"text", "toxicity_human"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: no column(s) {sorted(missing)}; ToxiGen's annotated split has text and toxicity_human")
    rows = frame[frame["text"].map(lambda t: isinstance(t, str) and bool(t.strip())) & frame["toxicity_human"].notna()]
    outside = rows[(rows["toxicity_human"] < 1) | (rows["toxicity_human"] > 5)]
    if len(outside):
        raise ConfigError(f"{path}: row {outside.index[0]}: toxicity_human={outside['toxicity_human'].iloc[0]}, "
                          "expected a rating in [1, 5]")
    return [ScoredText(text, float(score), f"{path.name}:{index}")
            for index, text, score in zip(rows.index, rows["text"], rows["toxicity_human"])]


def _check_kind(kind: str) -> None:
    if kind not in TOXIGEN_KINDS:
        raise ConfigError(f"kind={kind!r}, expected one of {TOXIGEN_KINDS}")


def _sample(numbered: list, count: int | None, seed: int, stream: str, where) -> list:
    """`count` items drawn without replacement (in their original order), seeded by (seed, stream)."""
    if count is None:
        return numbered
    if not 0 < count <= len(numbered):
        raise ConfigError(f"{where}: asked for {count} prompts, it holds {len(numbered)}")
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    return [numbered[i] for i in np.sort(rng.choice(len(numbered), size=count, replace=False))]
