"""Files keyed by their content.

Local files a stage reads (a corpus, an evaluation set) enter its key (detox.core.cache) by their
content: `content_hash(path)` is the sha256 of the whole file, memoised by the file's identity on disk, so
that planning many jobs (every job of a sweep plans its stages, several times) hashes each file once.
The memo is one JSON file, `$DETOX_HASH_CACHE`, by default `$XDG_CACHE_HOME/detox/file_hashes.json`
(`~/.cache/detox/...`): planning has no cache root at hand (a spec is computed from the config
alone), and a user-wide memo serves every project and root that reads the same corpus. An entry is
re-used only while the file's (size, mtime_ns, ctime_ns, inode) are those it was hashed with: ctime
catches a rewrite that restores the old mtime (`cp -p`, `rsync -t`, `tar -x`), which mtime alone
would miss. `DETOX_HASH_CACHE=` (empty) keeps the memo in the process only. sha256 rather than
blake2b: on CPUs with SHA extensions it is the faster of the two (1.9 against 1.35 GB/s on the
development machine, about 0.5 s per GB, twice a plain read from disk; benchmarks/file_hash.py
measures it on yours). A memoised file costs a stat and, in a new process, a read of the memo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

HASH_CHUNK = 8 << 20  # bytes read at a time when hashing a file
HASH_CACHE_ENV = "DETOX_HASH_CACHE"

_hashes: dict[str, tuple[list[int], str]] = {}  # this process's memo: path -> (identity, sha256)
_memo_read: tuple[Path, list[int], dict] | None = None  # the memo file as last read, and its identity


def hash_memo_path() -> Path | None:
    """The JSON memo of file hashes ($DETOX_HASH_CACHE; None when it is set empty)."""
    configured = os.environ.get(HASH_CACHE_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "detox" / "file_hashes.json"


def file_identity(path: Path) -> list[int]:
    """What changes whenever a file's content may have: its size, mtime_ns, ctime_ns and inode. (Not
    the device number: on a network file system it differs between the machines sharing the memo.)"""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def hash_file(path: Path | str) -> str:
    """The sha256 of a file's whole content, read in 8 MiB chunks (no memo)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def content_hash(path: Path | str) -> str:
    """The sha256 of a file's content, hashed once per identity (`file_identity`) across processes
    through the memo at `hash_memo_path()`. A memo that cannot be read or written costs a re-hash,
    never a wrong answer: a hash is re-used only while the file's identity is the one it was made with."""
    path = Path(path).resolve()
    name, identity = str(path), file_identity(path)
    known = _hashes.get(name)
    if known and known[0] == identity:
        return known[1]
    memo = hash_memo_path()
    digest = _lookup(memo, name, identity) if memo else None
    if digest is None:
        digest = _hash_and_store(memo, path, name, identity) if memo else hash_file(path)
    if file_identity(path) == identity:  # not written to while it was read
        _hashes[name] = (identity, digest)
    return digest


def _hash_and_store(memo: Path, path: Path, name: str, identity: list[int]) -> str:
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(memo) + ".lock")
        lock.acquire()
    except OSError as error:
        log.warning("file hash memo %s unusable (%s): hashing %s without it", memo, error, name)
        return hash_file(path)
    try:  # under the lock, so that jobs planned at the same moment hash a file once between them
        digest = _lookup(memo, name, identity)
        if digest is None:
            digest = hash_file(path)
            if file_identity(path) == identity:
                _store(memo, name, identity, digest)
        return digest
    finally:
        lock.release()


def _read_memo(memo: Path) -> dict:
    """The memo's entries (re-read only when the memo file changed since this process last read it)."""
    global _memo_read
    try:
        identity = file_identity(memo)
        if _memo_read and _memo_read[0] == memo and _memo_read[1] == identity:
            return _memo_read[2]
        entries = json.loads(memo.read_text())
        entries = entries if isinstance(entries, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("file hash memo %s unreadable (%s): starting it afresh", memo, error)
        return {}
    _memo_read = (memo, identity, entries)
    return entries


def _lookup(memo: Path, name: str, identity: list[int]) -> str | None:
    entry = _read_memo(memo).get(name)
    if isinstance(entry, dict) and entry.get("identity") == identity and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    return None


def _store(memo: Path, name: str, identity: list[int], digest: str) -> None:
    """Add an entry (the caller holds the memo's lock), the memo written whole to a temporary file
    and renamed over the old one, so that a reader never sees half a memo."""
    entries = {**_read_memo(memo), name: {"identity": identity, "sha256": digest}}
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=memo.name + ".", suffix=".tmp", dir=memo.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=0, sort_keys=True)
        os.replace(tmp, memo)
    except OSError as error:
        log.warning("file hash memo %s not written (%s)", memo, error)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
