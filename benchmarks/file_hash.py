"""What keying local corpora by their content costs: hashing a file against reading it, and the memo.

    python benchmarks/file_hash.py                 # a 1 GB file in a temporary folder, 3 interleaved rounds
    python benchmarks/file_hash.py --gb 4 --rounds 5 --dir /scratch   # bigger, on the disk the corpora live on
    python benchmarks/file_hash.py --cold          # evict the file from the page cache before each timing

Writes a file of random bytes (--gb, default 1), then times, interleaved over --rounds rounds (a
shared machine is noisy: the medians and the median of the per-round ratios are what to read):

* read: a plain read of the whole file in 8 MiB chunks (the floor any content hash pays);
* sha256: `detox.core.filehash.hash_file`, what the sources stage's key uses;
* blake2b: the same loop with hashlib.blake2b, the alternative considered;

and prints each one's seconds, GB/s and its ratio to the read. Then `content_hash` through a fresh
memo (a temporary $DETOX_HASH_CACHE): the first call hashes (its time), the second comes from the
memo of the same process, a third from the memo file as a new process finds it (the in-process memo
emptied), and after a `touch` (the file's mtime changed, its bytes not) a re-hash that gives the same
hash. Without --cold the file is read from the page cache (the CPU's cost; a just-written file is
there); with --cold each timing starts from the disk (posix_fadvise DONTNEED after an fsync), the
cost on a corpus that is not in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.core import filehash  # noqa: E402

GB = 10**9


def write_file(path: Path, size: int) -> None:
    block = os.urandom(filehash.HASH_CHUNK)
    with open(path, "wb") as f:
        for start in range(0, size, len(block)):
            f.write(block[:min(len(block), size - start)])
        f.flush()
        os.fsync(f.fileno())


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_only(path: Path) -> int:
    buffer, total = bytearray(filehash.HASH_CHUNK), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            total += n
    return total


def blake2b(path: Path) -> str:
    digest, buffer = hashlib.blake2b(), bytearray(filehash.HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="file size in GB (10^9 bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the file (default: the system's temp folder)")
    parser.add_argument("--cold", action="store_true", help="evict the file from the page cache before each timing")
    args = parser.parse_args(argv)
    size = int(args.gb * GB)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "corpus.bin"
        start = time.perf_counter()
        write_file(path, size)
        print(f"file: {size / GB:g} GB in {tmp} (written in {time.perf_counter() - start:.1f} s); "
              f"{'cold (page cache evicted before each timing)' if args.cold else 'warm (from the page cache)'}")
        methods = {"read": read_only, "sha256": filehash.hash_file, "blake2b": blake2b}
        times: dict[str, list[float]] = {name: [] for name in methods}
        for round_ in range(args.rounds):
            order = list(methods) if round_ % 2 == 0 else list(methods)[::-1]  # alternate, against drift
            for name in order:
                if args.cold:
                    evict(path)
                times[name].append(timed(methods[name], path)[0])
        print(f"{'':8} {'median s':>9} {'GB/s':>7} {'x read (median of rounds)':>27}")
        for name, values in times.items():
            ratio = statistics.median(v / r for v, r in zip(values, times["read"]))
            seconds = statistics.median(values)
            print(f"{name:8} {seconds:9.3f} {size / GB / seconds:7.2f} {ratio:27.2f}   "
                  f"(rounds: {', '.join(f'{v:.3f}' for v in values)})")

        previous = os.environ.get(filehash.HASH_CACHE_ENV)
        os.environ[filehash.HASH_CACHE_ENV] = str(Path(tmp) / "memo.json")
        try:
            memoised(path, size, args.cold)
        finally:
            if previous is None:
                del os.environ[filehash.HASH_CACHE_ENV]
            else:
                os.environ[filehash.HASH_CACHE_ENV] = previous
            filehash._hashes.clear()


def memoised(path: Path, size: int, cold: bool) -> None:
    """content_hash through a fresh memo: first, again, from the memo file, after a touch."""
    filehash._hashes.clear()
    if cold:
        evict(path)
    first, digest = timed(filehash.content_hash, path)
    again, same = timed(filehash.content_hash, path)
    filehash._hashes.clear()  # as a new process: only the memo file knows
    memo_file, from_file = timed(filehash.content_hash, path)
    os.utime(path)  # touched: a new mtime, the same bytes
    filehash._hashes.clear()
    if cold:
        evict(path)
    touched, after_touch = timed(filehash.content_hash, path)
    assert digest == same == from_file == after_touch
    print(f"content_hash: first {first:.3f} s ({size / GB / first:.2f} GB/s); memoised, same process "
          f"{again * 1e6:.0f} us; memoised, new process (memo file) {memo_file * 1e3:.2f} ms; "
          f"after touch (re-hashed, same hash) {touched:.3f} s")

if __name__ == "__main__":
    main()
