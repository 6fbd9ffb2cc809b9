"""Training corpora as streams of document texts, through Hugging Face `datasets` in streaming mode.

One code path reads a hub dataset (`allenai/c4`, config `en`) and local files (JSON lines, optionally
gzip- or zstd-compressed, parquet, arrow; a glob picks several): `iter_texts(spec)` yields one text per
document with constant memory, whatever the corpus size; `iter_documents(spec)` yields each text with the
toxicity score the corpus itself carries for it (a /pol/ post's Perspective TOXICITY), if any. Hub ids
need the network (they fail cleanly offline) and are pinned by `revision` (a commit; None reads main, not
reproducibly); the tests read local files.

The 4chan /pol/ corpus (Papasavva et al. 2020, "Raiders of the Lost Kek", Zenodo record 3606810)
reads with `format="fourchan"`. What was verified, and how:

* Verified (Zenodo record text; public code that parses the file): the corpus is newline-delimited
  JSON, one thread a line, as the 4chan API returns it; the thread's posts are a list under `posts`;
  each post's text is 4chan HTML in `com` (absent on image-only posts); the dataset adds `entities`,
  `perspectives` and `extracted_poster_id` per post; `perspectives` maps upper-case attribute names
  to scores in [0, 1], read as `post["perspectives"]["TOXICITY"]`.
* Verified (4chan API markup, and parsers of this corpus): `<br>` breaks lines; quote links are
  `<a href="#p123" class="quotelink">&gt;&gt;123</a>`, dead ones `<span class="deadlink">&gt;&gt;123</span>`;
  greentext is `<span class="quote">&gt;...</span>`; `<wbr>` marks optional breaks in long words;
  entities are escaped (`&#039;` `&gt;` `&quot;` `&amp;`).
* Not verified: whether every post carries `perspectives` (posts without a TOXICITY score are kept
  when `min_toxicity` is null and skipped, and counted, when it is set; MEDA and INST annotate them
  with the job's scorer's score, the others with their own); the exact file name. Zenodo
  ships `pol_0616-1119_labeled.tar.zst`; unpack it (`unzstd`, `tar -xf`) to get
  `pol_062016-112019_labeled.ndjson`, and read that, or a `zstd`-recompressed `.ndjson.zst`, here.

Cleaning a post: quote links (live and dead) are dropped, greentext keeps its text (with its `>`),
entities are unescaped, `<br>` becomes a newline, other tags keep their text; empty posts are skipped.
The thread subject (`sub`) is not part of a post's text.
"""

from __future__ import annotations

import glob
import html.parser
import json
import logging
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from detox.core.hub import resolve_commit
from detox.core.schema import ConfigError

log = logging.getLogger(__name__)

# Local file types and the `datasets` builder that streams them; JSON lines are streamed by the
# "text" builder and parsed here, so a malformed line is reported with its number instead of
# failing its whole batch.
FORMATS = ("plain", "fourchan")
ON_BAD_LINE = ("skip", "error")
LOCAL_KINDS = {".jsonl": "text", ".ndjson": "text", ".json": "text", ".parquet": "parquet", ".arrow": "arrow"}
COMPRESSIONS = ("", ".gz", ".zst")
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class SourceSpec:
    """Where a corpus is and how to read a document's text from it."""

    path: str  # a hub id (`allenai/c4`) or a local file or glob (.jsonl, .json.gz, .jsonl.zst, .parquet, .arrow)
    name: str | None = None  # hub config, e.g. `en` for C4 (hub ids only)
    split: str = "train"  # hub split (local files form one split)
    # hub ids only: the dataset's git revision (a commit sha, tag or branch) to read; part of the sources
    # stage's key. None reads the hub's current main: results are then not reproducible (a warning
    # says so); the commit main pointed to is resolved when the sources are built, logged, and read by
    # every mixture built from those sources (see `resolve_revision`).
    revision: str | None = None
    text_field: str | None = None  # dotted path to the text (`text`, `prompt.text`); None: `text`, or `com` per post for fourchan
    format: str = "plain"  # plain: one document a record | fourchan: a /pol/ thread a record, one document a post
    min_toxicity: float | None = None  # fourchan only: keep posts whose Perspective TOXICITY is at least this; None keeps all
    on_bad_line: str = "error"  # a malformed record: skip (and count) it | error
    shuffle_buffer: int = 10_000  # documents held to shuffle a seeded stream (memory is bounded by this)

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError("source path is empty")
        if self.format not in FORMATS:
            raise ConfigError(f"source {self.path}: format={self.format!r}, expected one of {FORMATS}")
        if self.on_bad_line not in ON_BAD_LINE:
            raise ConfigError(f"source {self.path}: on_bad_line={self.on_bad_line!r}, expected one of {ON_BAD_LINE}")
        if self.min_toxicity is not None:
            if self.format != "fourchan":
                raise ConfigError(f"source {self.path}: min_toxicity applies only to format='fourchan'")
            if not 0 <= self.min_toxicity <= 1:
                raise ConfigError(f"source {self.path}: min_toxicity={self.min_toxicity}, expected a score in [0, 1]")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"source {self.path}: shuffle_buffer={self.shuffle_buffer}, expected at least 1")

    @property
    def field_name(self) -> str:
        return self.text_field or ("com" if self.format == "fourchan" else "text")

    @property
    def field_path(self) -> list[str]:
        return self.field_name.split(".")


@dataclass
class SourceStats:
    """What reading a source met; filled in while `iter_texts` runs."""

    records: int = 0  # records read (lines, rows, threads)
    texts: int = 0  # documents yielded
    bad_records: int = 0  # malformed records skipped (on_bad_line='skip')
    empty: int = 0  # documents without text (null, blank, or only markup)
    below_threshold: int = 0  # fourchan: posts under min_toxicity
    unscored: int = 0  # fourchan: posts without a TOXICITY score while min_toxicity is set
    files: list[str] = field(default_factory=list)  # local files read, in order


def iter_texts(spec: SourceSpec, seed: int | None = None, stats: SourceStats | None = None) -> Iterator[str]:
    """The texts of `iter_documents`."""
    return (text for text, _ in iter_documents(spec, seed, stats))


def iter_documents(spec: SourceSpec, seed: int | None = None,
                   stats: SourceStats | None = None) -> Iterator[tuple[str, float | None]]:
    """Stream the documents of a source as (text, toxicity); with a seed, in a seeded shuffled order.
    `toxicity` is the score the corpus carries for the document: a /pol/ post's Perspective TOXICITY
    (`perspectives.TOXICITY`, when it is a number in [0, 1]), None for every other document.

    The shuffle is a bounded buffer (`spec.shuffle_buffer` documents) over the stream, with the files
    of a glob visited in a seeded order, so memory stays constant. Raises ConfigError for a missing
    file, a missing text field (with the record's file and number), a malformed record when
    `on_bad_line='error'`, and a source that yields no text (when the stream ends).
    """
    files = local_files(spec.path) if is_local(spec.path) else None  # a missing file fails here, not later
    return _stream(spec, files, seed, stats if stats is not None else SourceStats())


def _stream(spec: SourceSpec, files: list[str] | None, seed: int | None,
            stats: SourceStats) -> Iterator[tuple[str, float | None]]:
    documents = _documents(spec, _records(spec, files, seed, stats), stats)
    yield from documents if seed is None else shuffled(documents, seed, spec.shuffle_buffer)
    if stats.bad_records:
        log.warning("%s: skipped %d malformed records of %d", spec.path, stats.bad_records, stats.records)
    if stats.texts == 0:
        raise ConfigError(f"{spec.path}: the source yielded no text ({stats.records} records, {stats.bad_records} "
                          f"malformed, {stats.empty} empty, {stats.below_threshold} below min_toxicity, "
                          f"{stats.unscored} unscored)")


def shuffled(items: Iterable, seed: int | str, buffer_size: int) -> Iterator:
    """A seeded shuffle of a stream through a buffer of `buffer_size` items (exact for shorter streams)."""
    rng = random.Random(seed)
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def resolve_revision(spec: SourceSpec) -> str:
    """The commit sha the hub dataset's `revision` (None: main) points to now, or UNRESOLVED
    (detox.core.hub.resolve_commit): the job goes on, the log says so."""
    if spec.revision is None:
        log.warning("%s: no revision pinned, reading the hub's current main: results are not reproducible "
                    "(set the source's revision to a commit sha)", spec.path)
    return resolve_commit(spec.path, spec.revision, "dataset")


def is_local(path: str) -> bool:
    return bool(GLOB_CHARS.search(path)) or os.path.exists(os.path.expanduser(path)) or local_kind(path) is not None \
        or path.startswith(("/", "./", "../", "~"))


def local_kind(path: str) -> str | None:
    """The `datasets` builder for a local file name, or None for an unknown type."""
    name = path.lower()
    for ext, kind in LOCAL_KINDS.items():
        if any(name.endswith(ext + compression) for compression in COMPRESSIONS):
            return kind
    return None


def local_files(path: str) -> list[str]:
    """The files a local path or glob names; ConfigError if none, or one of an unsupported type."""
    files = sorted(glob.glob(os.path.expanduser(path)))
    if not files:
        raise ConfigError(f"{path}: no such file")
    for file in files:
        if not os.path.isfile(file) or local_kind(file) is None:
            suffixes = ", ".join(e + c for e in LOCAL_KINDS for c in COMPRESSIONS)
            raise ConfigError(f"{file}: not a readable corpus file, expected one of {suffixes}")
    return files


# ----------------------------------------------------------------------------------------- records

def _records(spec: SourceSpec, files: list[str] | None, seed: int | None,
             stats: SourceStats) -> Iterator[tuple[str, int, object]]:
    """(where, record number, record) of every record of a hub dataset (files=None) or of local files.

    JSON lines are parsed here; a malformed one comes as _Malformed.
    """
    import datasets  # heavy; imported when a corpus is read

    datasets.disable_progress_bars()
    if files is None:
        opened = _guarded(lambda: datasets.load_dataset(spec.path, spec.name, split=spec.split, streaming=True,
                                                        revision=spec.revision), spec.path)
        for number, row in enumerate(_guarded_iter(opened, spec.path), 1):
            stats.records += 1
            yield spec.path, number, row
        return
    if seed is not None:
        files = files[:]
        random.Random(seed).shuffle(files)
    for file in files:
        stats.files.append(file)
        kind = local_kind(file)
        stream = _guarded(lambda: datasets.load_dataset(kind, data_files=file, split="train", streaming=True), file)
        for number, row in enumerate(_guarded_iter(stream, file), 1):
            if kind != "text":
                stats.records += 1
                yield file, number, row
                continue
            line = row["text"]
            if not line.strip():
                continue
            stats.records += 1
            try:
                yield file, number, json.loads(line)
            except json.JSONDecodeError as error:
                yield file, number, _Malformed(f"malformed JSON ({error.msg})")


class _Malformed:
    def __init__(self, reason: str):
        self.reason = reason


def _guarded(open_source, where: str):
    try:
        return open_source()
    except ConfigError:
        raise
    except Exception as error:  # datasets raises many types (offline, not found, bad file): name the source
        raise ConfigError(f"{where}: cannot open the source ({type(error).__name__}: {error})") from None


def _guarded_iter(stream, where: str) -> Iterator:
    iterator = _guarded(lambda: iter(stream), where)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise ConfigError(f"{where}: cannot read the source ({type(error).__name__}: {error})") from None
        yield row


# ------------------------------------------------------------------------------------------- texts

def _documents(spec: SourceSpec, records: Iterator[tuple[str, int, object]],
               stats: SourceStats) -> Iterator[tuple[str, float | None]]:
    for where, number, record in records:
        if isinstance(record, _Malformed):
            _bad(spec, stats, where, number, record.reason)
        elif spec.format == "plain":
            text = _field(spec, record, where, number)
            if text is _BAD:
                _bad(spec, stats, where, number, f"{spec.field_name!r} is not a string")
            elif text is None or not text.strip():
                stats.empty += 1
            else:
                stats.texts += 1
                yield text, None
        else:
            yield from _posts(spec, record, where, number, stats)


_BAD = object()  # a field whose value is not a string


def _field(spec: SourceSpec, record: object, where: str, number: int) -> str | None | object:
    """The text at the dotted field of a record: a string, None (null), or _BAD; ConfigError if absent."""
    value = record
    for key in spec.field_path:
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"{where}: record {number} has no field {spec.field_name!r} "
                              f"(set the source's text_field)")
        value = value[key]
    return value if value is None or isinstance(value, str) else _BAD


def _bad(spec: SourceSpec, stats: SourceStats, where: str, number: int, reason: str) -> None:
    if spec.on_bad_line == "error":
        raise ConfigError(f"{where}: record {number}: {reason} (on_bad_line='skip' skips such records)")
    stats.bad_records += 1


def _posts(spec: SourceSpec, thread: object, where: str, number: int,
           stats: SourceStats) -> Iterator[tuple[str, float | None]]:
    """(cleaned text, Perspective TOXICITY or None) of a /pol/ thread's posts that pass the toxicity threshold."""
    posts = thread.get("posts") if isinstance(thread, dict) else None
    if not isinstance(posts, list) or not all(isinstance(post, dict) for post in posts):
        _bad(spec, stats, where, number, "expected a thread object with a list of post objects under 'posts'")
        return
    for post in posts:
        markup = post
        for key in spec.field_path:  # a post without its text field is an image-only post: empty
            markup = markup.get(key) if isinstance(markup, dict) else None
        if markup is not None and not isinstance(markup, str):
            _bad(spec, stats, where, number, f"a post's {spec.field_name!r} is not a string")
            continue
        score = post_toxicity(post)
        if spec.min_toxicity is not None:
            if score is None:
                stats.unscored += 1
                continue
            if score < spec.min_toxicity:
                stats.below_threshold += 1
                continue
        text = clean_post(markup or "")
        if not text:
            stats.empty += 1
            continue
        stats.texts += 1
        yield text, score


def post_toxicity(post: dict) -> float | None:
    """A /pol/ post's Perspective TOXICITY, or None where it has none (or one that is not a score in [0, 1])."""
    perspectives = post.get("perspectives")
    score = perspectives.get("TOXICITY") if isinstance(perspectives, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        return None
    return float(score)


class _PostText(html.parser.HTMLParser):
    """Collects a 4chan post's text: drops quote links, keeps other text, <br> to newline."""

    DROPPED = {("a", "quotelink"), ("span", "deadlink")}

    def __init__(self):
        super().__init__(convert_charrefs=True)  # unescapes &gt; &#039; &quot; &amp; in the text
        self.parts: list[str] = []
        self.stack: list[bool] = []  # per open element: is its text dropped?

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self.parts.append("\n")
        elif tag not in ("wbr", "img", "hr"):  # void elements open nothing
            classes = (dict(attrs).get("class") or "").split()
            self.stack.append(any((tag, c) in self.DROPPED for c in classes) or self.dropping)

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag not in ("br", "wbr", "img", "hr") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if not self.dropping:
            self.parts.append(data)

    @property
    def dropping(self) -> bool:
        return bool(self.stack) and self.stack[-1]


def clean_post(markup: str) -> str:
    """Plain text of a 4chan post's `com` HTML (see the module docstring for the rules)."""
    parser = _PostText()
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
