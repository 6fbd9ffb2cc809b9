"""Toxicity scorers: a scorer maps a list of texts to scores in [0, 1]. Pluggable by `scorer.name`."""

from __future__ import annotations

import numpy as np

from detox.config import ScorerConfig
from detox.evaluate import Scorer
from detox.world import oracle_toxicity


def make_scorer(cfg: ScorerConfig) -> Scorer:
    if cfg.name == "oracle":
        return lambda texts: np.array([oracle_toxicity(t) for t in texts], dtype=float)
    raise ValueError(f"scorer={cfg.name!r} is unknown")  # JobConfig.validate names the implemented ones
