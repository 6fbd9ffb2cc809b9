"""A monotone map from one toxicity scorer's scale onto another's (a classifier's onto Perspective's), as
`detox-scorer-check --calibrate` fits it and `scorer.calibration=FILE` applies it to every score.

The map is isotonic regression of the reference score on the scorer's score: non-decreasing, so it never
changes which of two texts is more toxic (a ROC-AUC stays as it was), only where a score sits on the
reference's scale; "share >= 0.5 on Perspective's scale" can then stand beside the paper's numbers. It is
stored as the regression's breakpoints and applied by linear interpolation between them, clipped at the
ends, exactly as scikit-learn's IsotonicRegression.predict does. The file names the scorer it was fitted
for (its identity), so a map is never applied to another model. Light: numpy, and scikit-learn only to fit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detox.core.schema import ConfigError

KIND = "isotonic"


@dataclass
class Calibration:
    x: list[float]  # the scorer's scores at the breakpoints, increasing
    y: list[float]  # the reference's score at each breakpoint, non-decreasing
    scorer: dict  # the identity of the scorer it was fitted for (detox.evaluation.config.ScorerConfig.identity)
    scorer_label: str = ""  # the same, as a person reads it
    reference: str = "Perspective TOXICITY as published with the validation sets"
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on: data sets and counts
    checked_on: dict = field(default_factory=dict)  # the held-out half's figures, before and after the map
    created: str = ""  # ISO date
    kind: str = KIND

    def __call__(self, scores) -> np.ndarray:
        """Scores on the reference's scale; a missing score (NaN) stays missing."""
        scores = np.asarray(scores, dtype=float)
        mapped = np.interp(scores, self.x, self.y)
        return np.where(np.isnan(scores), np.nan, mapped)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path


def fit(scores, reference, **about) -> Calibration:
    """The isotonic map of `reference` on `scores` (both in [0, 1]); `about`: the other fields."""
    from sklearn.isotonic import IsotonicRegression

    regression = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    regression.fit(np.asarray(scores, dtype=float), np.asarray(reference, dtype=float))
    return Calibration(x=regression.X_thresholds_.tolist(), y=regression.y_thresholds_.tolist(), **about)


def load(path: str | Path) -> Calibration:
    """A calibration file, or one ConfigError naming what is wrong with it."""
    try:
        values = json.loads(Path(path).read_text())
        calibration = Calibration(**values)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"scorer.calibration={str(path)!r}: not a calibration file ({error})") from None
    x, y = np.asarray(calibration.x, dtype=float), np.asarray(calibration.y, dtype=float)
    if calibration.kind != KIND or x.ndim != 1 or x.shape != y.shape or not len(x) or np.any(np.diff(x) < 0) \
            or np.any(np.diff(y) < 0) or not ((y >= 0) & (y <= 1)).all():
        raise ConfigError(f"scorer.calibration={str(path)!r}: expected an {KIND} map of increasing breakpoints "
                          "onto [0, 1]")
    return calibration
