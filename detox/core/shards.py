"""The packed mixture on disk, as the data stage writes it and training reads it.

Layout of a packed folder: `tokens-00000.bin`, `tokens-00001.bin`, ... raw little-endian token ids
(uint16 when every id fits, else uint32; an end-of-document token after every document) and
`index.json` (dtype, per-shard lengths, EOS id, the realised counts; with `span_loss`, a
`masks-NNNNN.bin` per shard marks the tokens that carry no loss). `index.json` is written last,
atomically, so a folder without it is an interrupted packing and `ShardedTokens` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detox.core.schema import ConfigError

INDEX = "index.json"
SHARD = "tokens-{:05d}.bin"
MASK_SHARD = "masks-{:05d}.bin"  # beside each token shard when the index has `span_loss`: uint8, 1 = a toxic span's token
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class ShardedTokens:
    """A packed folder's tokens, memory-mapped read-only: `len()`, `total_tokens`, `window(start, length)`;
    with `span_loss` (not None) also the span masks, `window(start, length, masks=True)`."""

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
        self.span_loss: dict | None = index.get("span_loss")
        self.shards = [self._map(shard["file"], shard["tokens"], self.dtype) for shard in index["shards"]]
        self.masks = [self._map(MASK_SHARD.format(i), shard["tokens"], np.dtype(np.uint8))
                      for i, shard in enumerate(index["shards"])] if self.span_loss is not None else None
        self.starts = np.concatenate([[0], np.cumsum([s.size for s in self.shards])]).astype(np.int64)

    def _map(self, name: str, tokens: int, dtype: np.dtype) -> np.memmap:
        path, expected = self.folder / name, tokens * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            found = path.stat().st_size if path.is_file() else "no file"
            raise ConfigError(f"{path}: expected {expected} bytes ({tokens} tokens), found {found}")
        return np.memmap(path, dtype=dtype, mode="r", shape=(tokens,))

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

    def window(self, start: int, length: int, masks: bool = False) -> np.ndarray:
        """A copy of tokens [start, start + length) (or, with `masks`, of their span mask), across shard boundaries."""
        if start < 0 or length < 0 or start + length > self.total_tokens:
            raise IndexError(f"window({start}, {length}) is outside the {self.total_tokens} tokens of {self.folder}")
        if masks and self.masks is None:
            raise ConfigError(f"{self.folder}: a mixture without span masks (no span_loss in its {INDEX})")
        shards = self.masks if masks else self.shards
        result = np.empty(length, dtype=shards[0].dtype if shards else self.dtype)
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < length:
            offset = start + filled - int(self.starts[shard])
            take = min(length - filled, shards[shard].size - offset)
            result[filled:filled + take] = shards[shard][offset:offset + take]
            filled += take
            shard += 1
        return result


def open_mixture(folder: Path) -> ShardedTokens:
    """The packed mixture's tokens, memory-mapped: sliceable and sized like a numpy array."""
    return ShardedTokens(folder)
