"""The packed mixture on disk, as the data stage writes it and training reads it.

Layout of a packed folder: `tokens-00000.bin`, `tokens-00001.bin`, ... raw little-endian token ids
(uint16 when every id fits, else uint32; an end-of-document token after every document) and
`index.json` (dtype, per-shard lengths, EOS id, the realised counts). `index.json` is written last,
atomically, so a folder without it is an interrupted packing and `ShardedTokens` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detox.core.schema import ConfigError

INDEX = "index.json"
SHARD = "tokens-{:05d}.bin"
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class ShardedTokens:
    """A packed folder's tokens, memory-mapped read-only: `len()`, `total_tokens`, `window(start, length)`."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        index_path = self.folder / INDEX
        if not index_path.is_file():
            raise ConfigError(f"{self.folder}: no {INDEX}; not a complete shard folder (an interrupted packing?)")
        index = json.loads(index_path.read_text())
        if index.get("dtype") not in DTYPES:
            raise ConfigError(f"{index_path}: dtype={index.get('dtype')!r}, expected one of {tuple(DTYPES)}")
        self.dtype = np.dtype(DTYPES[index["dtype"]]).newbyteorder("<")
        self.eos_id: int = index["eos_id"]
        self.counts: dict = index.get("counts", {})
        self.shards = []
        for shard in index["shards"]:
            path = self.folder / shard["file"]
            expected = shard["tokens"] * self.dtype.itemsize
            if not path.is_file() or path.stat().st_size != expected:
                found = path.stat().st_size if path.is_file() else "no file"
                raise ConfigError(f"{path}: expected {expected} bytes ({shard['tokens']} tokens), found {found}")
            self.shards.append(np.memmap(path, dtype=self.dtype, mode="r", shape=(shard["tokens"],)))
        self.starts = np.concatenate([[0], np.cumsum([s.size for s in self.shards])]).astype(np.int64)

    @property
    def total_tokens(self) -> int:
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.total_tokens

    def __getitem__(self, span: slice) -> np.ndarray:
        """tokens[start:stop], as a numpy array would give them (a copy)."""
        start, stop, step = span.indices(self.total_tokens)
        if step != 1:
            raise IndexError("ShardedTokens slices take consecutive tokens only")
        return self.window(start, max(0, stop - start))

    def window(self, start: int, length: int) -> np.ndarray:
        """A copy of tokens [start, start + length), across shard boundaries."""
        if start < 0 or length < 0 or start + length > self.total_tokens:
            raise IndexError(f"window({start}, {length}) is outside the {self.total_tokens} tokens of {self.folder}")
        result = np.empty(length, dtype=self.dtype)
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < length:
            offset = start + filled - int(self.starts[shard])
            take = min(length - filled, self.shards[shard].size - offset)
            result[filled:filled + take] = self.shards[shard][offset:offset + take]
            filled += take
            shard += 1
        return result


def open_mixture(folder: Path) -> ShardedTokens:
    """The packed mixture's tokens, memory-mapped: sliceable and sized like a numpy array."""
    return ShardedTokens(folder)
