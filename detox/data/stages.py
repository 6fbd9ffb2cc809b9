"""The tokenizer and mixture stages as the pipeline calls them (the sources stage is its source kind's
`build`). See the package's docstring (detox/data/__init__.py) for what each module holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from detox.core.artifacts import TOKENIZER
from detox.core.schema import ConfigError
from detox.data.config import DataConfig
from detox.data.documents import Transform, as_document
from detox.data.sources import source_kind

TRAINING_PARTS = ("clean", "toxic")


def train_tokenizer(cfg: DataConfig, sources: Path, out: Path) -> dict:
    """Train a byte-level BPE tokenizer on the training documents (or copy the configured one)."""
    from tokenizers import Tokenizer

    from detox.core.tokens import EOS, PAD, byte_level_bpe, olmo_tokenizer

    if cfg.tokenizer.path == "olmo":
        tokenizer = olmo_tokenizer()
    elif cfg.tokenizer.path:
        tokenizer = Tokenizer.from_file(cfg.tokenizer.path)
        for token in (EOS, PAD):
            if tokenizer.token_to_id(token) is None:
                raise ConfigError(f"data.tokenizer.path={cfg.tokenizer.path}: lacks the special token {token}")
    else:
        kind = source_kind(cfg)
        texts = [as_document(doc).text for part in TRAINING_PARTS for doc in kind.documents(part, sources, None)]
        tokenizer = byte_level_bpe(texts, cfg.tokenizer.vocab_size)
    tokenizer.save(str(out / TOKENIZER))
    return {"vocab_size": tokenizer.get_vocab_size()}


def build_mixture(cfg: DataConfig, ratio: float, seed: int, sources: Path, tokenizer_dir: Path, out: Path,
                  transform: Transform | None = None, span_loss: dict | None = None) -> dict:
    """Pack the (ratio, seed) mixture of the source kind's documents into memory-mapped shards in `out`
    (detox.data.packing), `transform` applied to each training part's documents first (MEDA and INST
    annotate there; filter and loss_mask too, the latter with the packer's `span_loss`); return the realised
    counts, the kind's metrics and the transform's."""
    from detox.core.tokens import load_tokenizer
    from detox.data.packing import pack_mixture

    kind = source_kind(cfg)
    streams = {part: kind.documents(part, sources, seed) for part in TRAINING_PARTS}
    if transform is not None:
        streams = {part: transform(part, documents) for part, documents in streams.items()}
    taken = Counter()
    metrics = pack_mixture(streams["clean"], streams["toxic"], load_tokenizer(tokenizer_dir), ratio, cfg.clean_tokens,
                           seed, out, taken=taken, span_loss=span_loss, **kind.pack_options())
    metrics.update(kind.mixture_metrics(taken, sources))
    if transform is not None:
        metrics.update(transform.metrics(taken))
    return metrics


def prepare_corpora(cfg: DataConfig, sources: Path, tokenizer_dir: Path, out: Path) -> dict:
    """Tokenise the training corpora once (detox.data.store): the clean one's first `clean_tokens` tokens into
    `out/clean`, the whole toxic one into `out/toxic`; every mixture of the grid is drawn from them."""
    from detox.core.tokens import load_tokenizer
    from detox.data.store import prepare_store

    kind, tokenizer = source_kind(cfg), load_tokenizer(tokenizer_dir)
    metrics = {}
    for part, limit in (("clean", cfg.clean_tokens), ("toxic", None)):
        counts = prepare_store(kind.documents(part, sources, None), tokenizer, out / part, max_tokens=limit,
                               shard_tokens=kind.pack_options().get("shard_tokens", 2**27), desc=f"prepare {part}")
        metrics.update({f"prepared_{part}_{name.removeprefix('store_')}": n for name, n in counts.items()})
    return metrics


def sample_prepared_mixture(cfg: DataConfig, ratio: float, seed: int, prepared: Path, out: Path) -> dict:
    """The (ratio, seed) mixture drawn from the prepared stores (detox.data.store.sample_mixture)."""
    from detox.data.store import TokenStore, sample_mixture

    kind = source_kind(cfg)
    options = kind.pack_options()
    return sample_mixture(TokenStore(prepared / "clean"), TokenStore(prepared / "toxic"), ratio, cfg.clean_tokens,
                          seed, out, shard_tokens=options["shard_tokens"], on_short=options["on_short"],
                          toxic_name=options["toxic_name"])
