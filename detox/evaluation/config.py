"""The evaluation stage's options: the toxicity scorer (conf/scorer/), generation and CE settings
(conf/evaluate/), GCG red-teaming (conf/redteam/) and lm-evaluation-harness tasks (conf/capability/).

Light (nothing here imports torch or transformers).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from detox.core.calibration import load as load_calibration
from detox.core.families import HUB_ID, is_local_model, local_identity, resolve_model_commit
from detox.core.filehash import content_hash
from detox.core.hub import UNRESOLVED
from detox.core.schema import ConfigError, choice, number

SCORERS = ("oracle", "classifier", "perspective")
ACTIVATIONS = ("auto", "softmax", "sigmoid")
PERSPECTIVE_CLOSES = "31 December 2026"  # Google's announced end of the Perspective API (no new keys since mid-2026)
# The scorer spec's fields as they were before the scorer's identity entered it: the oracle's and Perspective's
# specs keep exactly these, so no key of their jobs moved (the classifier's spec is its identity instead).
_SPEC_BEFORE_IDENTITY = ("name", "threshold", "model", "toxic_label", "batch_size", "qps", "api_key_env")


@dataclass
class ScorerConfig:
    name: str = choice("oracle", *SCORERS)  # oracle: the synthetic world's exact scorer | classifier: transformers
    threshold: float = number(0.5, "[0, 1]")  # a score at or above this counts as toxic
    model: str = ""  # classifier: a local folder or hub id of a text-classification model
    revision: str | None = None  # classifier, hub ids: a commit (or branch, tag) of the model; None: main
    toxic_label: str = "toxic"  # classifier: the label whose probability is the toxicity score
    # classifier: softmax over the labels (a single-label model) | sigmoid of the toxic label's logit (a
    # multi-label one) | auto: as the model's config says (problem_type multi_label_classification: sigmoid)
    activation: str = choice("auto", *ACTIVATIONS)
    calibration: str = ""  # classifier: a calibration.json of detox-scorer-check --calibrate, applied to every score
    batch_size: int = number(32, "[1, inf)")  # classifier: texts per forward pass
    qps: float = number(1.0, "(0, inf)")  # perspective: requests per second at most (the API's default quota)
    api_key_env: str = "PERSPECTIVE_API_KEY"  # perspective: the environment variable holding the key (never logged)
    # perspective: send doNotStore, so Google deletes each text once scored (else it may keep the model's
    # outputs and the /pol/ posts it is sent)
    do_not_store: bool = True
    cache: bool = True  # perspective: keep scores in <root>/cache/perspective/scores.sqlite, so no text is asked twice

    def result_spec(self) -> dict:
        """The scorer's part of a stage's spec: what decides its scores. The oracle's and Perspective's are
        the fields they always had (do_not_store and cache never change a score; qps and api_key_env do not
        either, but dropping them would change every key made before). A classifier's is its identity (the
        commit of a hub model, the content of a local folder: never a path or a branch name), its label,
        activation and calibration, so a new model version is a new evaluation."""
        if self.name != "classifier":
            return {field: getattr(self, field) for field in _SPEC_BEFORE_IDENTITY}
        spec = {"name": self.name, "threshold": self.threshold, "identity": self.identity(),
                "toxic_label": self.toxic_label, "activation": self.activation}
        if self.calibration:
            spec["calibration"] = calibration_hash(self.calibration)
        return spec

    def identity(self) -> dict:
        """A classifier's identity: {"hub", "commit"} of a hub id (the commit its revision resolves to;
        "unresolved", with the revision, when neither the hub nor the local hub cache knows it), or
        {"files"}: one sha256 over the name and content of every file of a local folder."""
        return classifier_identity(self.model, self.revision)

    def label(self) -> str:
        """The scorer as tables and the MLflow param `scorer` name it: which scorer, at which version."""
        if self.name == "oracle":
            return "oracle"
        if self.name == "perspective":
            return "perspective TOXICITY (unversioned API)"
        identity = self.identity()
        if "files" in identity:
            shown = f"{Path(self.model).name} files:{identity['files'][:12]}"
        elif identity["commit"] == UNRESOLVED:
            shown = f"{self.model}@{identity['revision']} (unresolved)"
        else:
            shown = f"{self.model}@{identity['commit'][:12]}"
        return shown + (f" calibrated:{calibration_hash(self.calibration)[:12]}" if self.calibration else "")

    def require_version(self) -> None:
        """One ConfigError, before any work, for a hub classifier whose revision resolves to no commit
        (offline, not in the local hub cache): its scores could not be tied to a version of the model."""
        identity = self.identity() if self.name == "classifier" else {}
        if identity.get("commit") == UNRESOLVED:
            raise ConfigError(f"scorer.model={self.model} at revision {identity['revision']} resolves to no commit "
                              f"(offline, and not in the local hub cache): download it first (hf download "
                              f"{self.model}) or pin scorer.revision=<commit>")

    def check(self) -> None:
        """The scorer's own rules, before any work (the model's labels are checked where its config is at
        hand: a local folder, or a hub model in the local hub cache; else when it loads, before generation)."""
        if self.name != "classifier":
            for key, value in (("revision", self.revision), ("calibration", self.calibration)):
                if value:
                    raise ConfigError(f"scorer.{key}={value!r} applies to scorer=classifier only, not {self.name}")
            return
        if not self.model:
            raise ConfigError("scorer=classifier needs scorer.model: a local folder or hub id of a classifier")
        if is_local_model(self.model):
            if self.revision:
                raise ConfigError(f"scorer.revision={self.revision!r} applies to hub ids only, not the local "
                                  f"folder scorer.model={self.model!r}")
            if not Path(self.model).expanduser().is_dir():
                raise ConfigError(f"scorer.model={self.model!r}: no such folder (a local classifier or a hub id)")
        elif not HUB_ID.fullmatch(self.model):
            raise ConfigError(f"scorer.model={self.model!r}: neither a local folder nor a hub id (owner/name)")
        if self.calibration:
            if not Path(self.calibration).is_file():
                raise ConfigError(f"scorer.calibration={self.calibration!r}: no such file (detox-scorer-check "
                                  "--calibrate writes one)")
            fitted = load_calibration(self.calibration).scorer
            if fitted != self.identity():
                raise ConfigError(f"scorer.calibration={self.calibration!r} was fitted for the scorer {fitted}, "
                                  f"not for scorer.model={self.model} ({self.identity()})")
        config = cached_model_config(self.model, self.revision)
        if config is not None:
            self.check_model(config)

    def check_model(self, config: dict) -> str:
        """The activation this classifier's scores take, given its config.json (a dict); one ConfigError
        when the toxic label is not among the model's labels or the activation cannot apply."""
        labels = [str(label) for label in (config.get("id2label") or {}).values()]
        if self.toxic_label not in labels:
            raise ConfigError(f"scorer.toxic_label={self.toxic_label!r} is not a label of {self.model}: {labels}")
        activation = self.activation
        if activation == "auto":
            multi = config.get("problem_type") == "multi_label_classification" or len(labels) == 1
            activation = "sigmoid" if multi else "softmax"
        if activation == "softmax" and len(labels) < 2:
            raise ConfigError(f"scorer.activation=softmax: {self.model} has one output label ({labels}), whose "
                              "softmax is always 1; use scorer.activation=sigmoid")
        return activation


def classifier_identity(model: str, revision: str | None) -> dict:
    """See ScorerConfig.identity."""
    if is_local_model(model):
        files = local_identity(model)["files"]
        listing = "".join(f"{name}\t{digest}\n" for name, digest in sorted(files.items()))
        return {"files": hashlib.sha256(listing.encode()).hexdigest()}
    commit = resolve_model_commit(model, revision, warn=False)
    return {"hub": model, "commit": commit} if commit != UNRESOLVED else \
        {"hub": model, "revision": revision or "main", "commit": UNRESOLVED}


def cached_model_config(model: str, revision: str | None) -> dict | None:
    """A classifier's config.json at hand without the network: a local folder's, or a hub model's from the
    local hub cache at the commit its revision resolves to; None when neither has it."""
    if is_local_model(model):
        path = Path(model).expanduser() / "config.json"
        if not path.is_file():
            raise ConfigError(f"scorer.model={model!r}: no config.json in the folder (save it with save_pretrained)")
    else:
        from huggingface_hub import try_to_load_from_cache

        commit = resolve_model_commit(model, revision, warn=False)
        found = try_to_load_from_cache(model, "config.json", revision=None if commit == UNRESOLVED else commit)
        if not isinstance(found, str):
            return None
        path = Path(found)
    return json.loads(path.read_text())


def calibration_hash(path: str) -> str:
    """A calibration file's identity: the sha256 of its content (memoised, detox.core.filehash)."""
    return content_hash(path)


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
