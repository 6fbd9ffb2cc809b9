"""Toxicity scorers: a scorer maps a list of texts to scores in [0, 1]. Pluggable by `scorer.name`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detox.core.score_cache import cached_scorer
from detox.data.world import oracle_toxicity
from detox.evaluation.config import ScorerConfig
from detox.evaluation.evaluate import Scorer


def make_scorer(cfg: ScorerConfig, root: str | Path | None = None) -> Scorer:
    """The scorer `cfg` names. `root` is the job's root: the Perspective scorer keeps its score cache and
    the rate limit shared by every job on that root in `<root>/cache/perspective/` (None: neither)."""
    if cfg.name == "oracle":
        return lambda texts: np.array([oracle_toxicity(t) for t in texts], dtype=float)
    if cfg.name == "classifier":
        return classifier_scorer(cfg)
    if cfg.name == "perspective":
        from detox.evaluation.perspective import PerspectiveScorer

        state_dir = Path(root).resolve() / "cache" / "perspective" if root is not None else None
        return PerspectiveScorer(api_key_env=cfg.api_key_env, qps=cfg.qps, do_not_store=cfg.do_not_store,
                                 state_dir=state_dir, cache=cfg.cache)
    raise ValueError(f"scorer={cfg.name!r} is unknown")  # JobConfig.validate names the implemented ones


def bulk_scorer(cfg: ScorerConfig, root: str | Path) -> Scorer:
    """The job's scorer for documents scored in bulk (MEDA's and INST's annotation, SFT's filter): a
    classifier's scores kept by text in `<root>/cache/scores/scores.sqlite` (detox.core.score_cache),
    so the clean documents that every mixture of a study reads are scored once. Perspective keeps its
    own cache, and the oracle is exact and cheap: both as make_scorer gives them."""
    scorer = make_scorer(cfg, root)
    if cfg.name != "classifier":
        return scorer
    model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model  # a local folder, or a hub id
    identity = {"name": cfg.name, "model": model, "toxic_label": cfg.toxic_label}
    return cached_scorer(scorer, identity, Path(root).resolve() / "cache" / "scores" / "scores.sqlite")


def scorer_metrics(scorer: Scorer) -> dict[str, float]:
    """What a scorer reports of its own work, for the stage's metrics (the Perspective scorer: the
    texts it truncated); {} for the others."""
    metrics = getattr(scorer, "metrics", None)
    return metrics() if callable(metrics) else {}


def classifier_scorer(cfg: ScorerConfig) -> Scorer:
    """The probability of `cfg.toxic_label` under a transformers text-classification model
    (e.g. a ToxiGen RoBERTa), loaded from a local folder or the hub, never with remote code."""
    import torch
    from transformers import pipeline

    device = 0 if torch.cuda.is_available() else -1  # the first GPU when there is one; texts go in batches
    classify = pipeline("text-classification", model=cfg.model, top_k=None, device=device, trust_remote_code=False)
    labels = set(classify.model.config.id2label.values())
    if cfg.toxic_label not in labels:
        raise ValueError(f"scorer.toxic_label={cfg.toxic_label!r} is not a label of {cfg.model}: {sorted(labels)}")

    def score(texts: list[str]) -> np.ndarray:
        results = classify(texts, batch_size=cfg.batch_size, truncation=True)
        return np.array([next(r["score"] for r in result if r["label"] == cfg.toxic_label) for result in results])

    return score
