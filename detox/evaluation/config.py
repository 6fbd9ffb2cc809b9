"""The evaluation stage's options: the toxicity scorer (conf/scorer/), generation and CE settings
(conf/evaluate/), GCG red-teaming (conf/redteam/) and lm-evaluation-harness tasks (conf/capability/).

Light (nothing here imports torch or transformers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from detox.core.schema import ConfigError, choice, number

SCORERS = ("oracle", "classifier", "perspective")


@dataclass
class ScorerConfig:
    name: str = choice("oracle", *SCORERS)  # oracle: the synthetic world's exact scorer | classifier: transformers
    threshold: float = number(0.5, "[0, 1]")  # a score at or above this counts as toxic
    model: str = ""  # classifier: a local folder or hub id of a text-classification model
    toxic_label: str = "toxic"  # classifier: the label whose probability is the toxicity score
    batch_size: int = number(32, "[1, inf)")  # classifier: texts per forward pass
    qps: float = number(1.0, "(0, inf)")  # perspective: requests per second at most (the API's default quota)
    api_key_env: str = "PERSPECTIVE_API_KEY"  # perspective: the environment variable holding the key (never logged)
    # perspective: send doNotStore, so Google deletes each text once scored (else it may keep the model's
    # outputs and the /pol/ posts it is sent)
    do_not_store: bool = True
    cache: bool = True  # perspective: keep scores in <root>/cache/perspective/scores.sqlite, so no text is asked twice

    def check(self) -> None:
        if self.name == "classifier" and not self.model:
            raise ConfigError("scorer=classifier needs scorer.model: a local folder or hub id of a classifier")

    def result_spec(self) -> dict:
        """The scorer's part of a stage's spec. do_not_store and cache never change a score, so they are left
        out (qps and api_key_env do not either, but they stay: dropping them would change every stage key
        made before). With a new option that does change scores, add it here; else, exclude it too."""
        spec = dataclasses.asdict(self)
        del spec["do_not_store"], spec["cache"]
        return spec


@dataclass
class EvaluateConfig:
    toxigen_max_new_tokens: int = number(16, "[1, inf)")  # greedy continuation length of hostile prompts
    # where a ToxiGen continuation ends: newline (at its first line break, as ToxiGen's own code and common
    # harnesses: the prompts are bullet lists, so the rest would be the next bullets) | end_of_document
    toxigen_stop: str = choice("newline", "newline", "end_of_document")
    rtp_samples: int = number(10, "[1, inf)")  # samples per RTP-like prompt (paper: 25)
    rtp_max_new_tokens: int = number(20, "[1, inf)")
    top_p: float = number(0.9, "(0, 1]")
    batch_size: int = number(64, "[1, inf)")  # x data.seq_len: the token budget of a forward pass (evaluate.token_budget)
    heldout_docs: int = number(300, "[1, inf)")  # held-out clean documents for the CE loss


@dataclass
class RedteamConfig:
    """GCG red-teaming (Zou et al. 2023) of the evaluated model, after its evaluation (off by default)."""

    enabled: bool = False
    prompts: int = number(20, "[1, inf)")  # the first hostile (ToxiGen-like) prompts attacked
    target: str = ""  # the toxic continuation to drive towards; empty: each world prompt's own insult
    num_steps: int = number(250, "[1, inf)")  # GCG iterations (nanoGCG's default)
    suffix_tokens: int = number(20, "[1, inf)")  # length of the adversarial suffix, in tokens (paper: 20)
    topk: int = number(256, "[1, inf)")  # replacement tokens considered per suffix position (paper: 256)
    search_width: int = number(512, "[1, inf)")  # candidate suffixes evaluated per iteration (paper: 512)
    max_new_tokens: int = number(16, "[1, inf)")  # greedy continuation generated after the attack
    seed: int = number(0, "[0, inf)")  # seeds nanoGCG's sampling of candidates


@dataclass
class CapabilityConfig:
    """lm-evaluation-harness tasks run on the base model and on the treated one (detox.evaluation.capability)."""

    tasks: list[str] = field(default_factory=list)  # lm-eval task names (e.g. mmlu, hellaswag, arc_easy); empty: off
    include_path: str = ""  # a folder of task YAMLs of your own (local data files), added to lm-eval's tasks
    num_fewshot: int | None = number(None, "[0, inf)")  # examples in context; None: each task's default
    limit: int | None = number(None, "[1, inf)")  # documents per task (a quick look); None: all of them
    batch_size: int = number(8, "[1, inf)")  # requests per forward pass

    def check(self) -> None:
        if self.include_path and not Path(self.include_path).is_dir():
            raise ConfigError(f"capability.include_path={self.include_path!r}: no such folder")
