"""Toxicity scorers: a scorer maps a list of texts to scores in [0, 1] (NaN for a text it could not score,
which every measure leaves out and counts). Pluggable by `scorer.name`; a scorer may report its own work
through a `metrics()` method (texts truncated, texts missing), merged into the stage's metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from detox.core.calibration import load as load_calibration
from detox.core.schema import ConfigError
from detox.core.score_cache import CachedScorer
from detox.data.world import oracle_toxicity
from detox.evaluation.config import PERSPECTIVE_CLOSES, ScorerConfig
from detox.evaluation.evaluate import Scorer

log = logging.getLogger(__name__)

TRUNCATED = "classifier_truncated"  # the metric: texts cut at the classifier's maximum length before scoring
# Models whose position ids start after the padding index (RoBERTa's family): max_position_embeddings counts
# pad_token_id + 1 positions that no token can use.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")


def make_scorer(cfg: ScorerConfig, root: str | Path | None = None) -> Scorer:
    """The scorer `cfg` names. `root` is the job's root: the Perspective scorer keeps its score cache and
    the rate limit shared by every job on that root in `<root>/cache/perspective/` (None: neither)."""
    if cfg.name == "oracle":
        return lambda texts: np.array([oracle_toxicity(t) for t in texts], dtype=float)
    if cfg.name == "classifier":
        return calibrated(ClassifierScorer(cfg), cfg)
    if cfg.name == "perspective":
        from detox.evaluation.perspective import PerspectiveScorer

        warn_perspective_closing()
        state_dir = Path(root).resolve() / "cache" / "perspective" if root is not None else None
        return PerspectiveScorer(api_key_env=cfg.api_key_env, qps=cfg.qps, do_not_store=cfg.do_not_store,
                                 state_dir=state_dir, cache=cfg.cache)
    raise ValueError(f"scorer={cfg.name!r} is unknown")  # JobConfig.validate names the implemented ones


def warn_perspective_closing() -> None:
    log.warning("scorer=perspective: Google's Perspective API closes on %s; its scores cannot be asked for again "
                "after that (keep them: detox-perspective-cache export). The open default is scorer=classifier "
                "(docs/guide/measuring-toxicity.md)", PERSPECTIVE_CLOSES)


def bulk_scorer(cfg: ScorerConfig, root: str | Path) -> Scorer:
    """The job's scorer for documents scored in bulk (MEDA's and INST's annotation, SFT's filter): a
    classifier's raw scores kept by text in `<root>/cache/scores/scores.sqlite` (detox.core.score_cache)
    under its identity, so the clean documents that every mixture of a study reads are scored once, then
    its calibration applied. Perspective keeps its own cache, and the oracle is exact and cheap: both as
    make_scorer gives them."""
    if cfg.name != "classifier":
        return make_scorer(cfg, root)
    identity = {"name": cfg.name, **cfg.identity(), "toxic_label": cfg.toxic_label, "activation": cfg.activation}
    raw = CachedScorer(ClassifierScorer(cfg), identity, Path(root).resolve() / "cache" / "scores" / "scores.sqlite")
    return calibrated(raw, cfg)


def scorer_metrics(scorer: Scorer) -> dict[str, float]:
    """What a scorer reports of its own work, for the stage's metrics (the Perspective scorer: the texts
    it truncated and those it could not score; a classifier: the texts it truncated); {} for the oracle."""
    metrics = getattr(scorer, "metrics", None)
    return metrics() if callable(metrics) else {}


class Calibrated:
    """A scorer whose scores go through a monotone map onto another scorer's scale (detox.core.calibration)."""

    def __init__(self, scorer: Scorer, path: str):
        self.scorer, self.calibration = scorer, load_calibration(path)

    def __call__(self, texts) -> np.ndarray:
        return self.calibration(self.scorer(texts))

    def metrics(self) -> dict[str, float]:
        return scorer_metrics(self.scorer)


def calibrated(scorer: Scorer, cfg: ScorerConfig) -> Scorer:
    return Calibrated(scorer, cfg.calibration) if cfg.calibration else scorer


class ClassifierScorer:
    """The probability of `cfg.toxic_label` under a transformers sequence-classification model (a local
    folder, or a hub id at the commit its revision resolves to; never remote code): a softmax over the
    labels of a single-label model, the label's sigmoid for a multi-label one (`cfg.activation`; the label
    is checked against the model's own as it loads). Texts go in batches of `cfg.batch_size`, sorted by
    length so that a batch pads little, on the job's device (a GPU in bfloat16, or float16 where bfloat16
    is not supported; the CPU in float32); a text longer than the model's maximum length is cut there
    and counted (`metrics()`)."""

    def __init__(self, cfg: ScorerConfig, device=None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from detox.core.models import inference_device

        cfg.require_version()  # never score under a version no one could name afterwards
        revision = cfg.identity().get("commit")  # None for a local folder
        self.device = torch.device(device) if device is not None else inference_device()
        dtype = torch.float32 if self.device.type == "cpu" else \
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, revision=revision, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            cfg.model, revision=revision, dtype=dtype, trust_remote_code=False).eval().to(self.device)
        config = self.model.config
        self.activation = cfg.check_model(config.to_dict())
        self.label = next(int(i) for i, label in config.id2label.items() if str(label) == cfg.toxic_label)
        self.max_length = max_length(self.tokenizer, config)
        self.batch_size = cfg.batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.truncated = 0  # texts cut to max_length, over every call

    def metrics(self) -> dict[str, float]:
        return {TRUNCATED: float(self.truncated)}

    def __call__(self, texts) -> np.ndarray:
        import torch

        texts = list(texts)
        ids = self.tokenizer(texts, truncation=False, verbose=False)["input_ids"] if texts else []
        long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if long:  # cut as the tokenizer cuts (its special tokens kept), and counted
            cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=self.max_length)["input_ids"]
            for i, row in zip(long, cut):
                ids[i] = row
            self.truncated += len(long)
        scores = np.zeros(len(texts))
        # a blank text (no tokens: a continuation that ended at once) says nothing and scores 0 without the
        # model, as Perspective's blank texts do
        order = [i for i in np.argsort([len(row) for row in ids], kind="stable") if texts[i].strip() and ids[i]]
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chosen = order[start:start + self.batch_size]
                rows = [ids[i] for i in chosen]
                width = max(len(row) for row in rows)
                input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, row in enumerate(rows):
                    input_ids[j, :len(row)] = torch.tensor(row)
                    mask[j, :len(row)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logits = logits.float()
                probability = logits.softmax(-1)[:, self.label] if self.activation == "softmax" else \
                    logits[:, self.label].sigmoid()
                scores[chosen] = probability.cpu().numpy()
        return scores


def max_length(tokenizer, config) -> int:
    """The most tokens the classifier reads: its tokenizer's model_max_length where that is set (a huge
    number means unset), and never more than its position embeddings can place."""
    limits = []
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if config.model_type in OFFSET_POSITIONS:
            positions -= (config.pad_token_id or 0) + 1
        limits.append(int(positions))
    if not limits:
        raise ConfigError(f"{config.name_or_path}: neither its tokenizer nor its config says how many tokens it reads")
    return min(limits)
