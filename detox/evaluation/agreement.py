"""How a toxicity scorer agrees with scores and labels that no one here wrote (the computation of the
detox-scorer-check command, detox/scorer_check.py): the table's rows, the calibration onto Perspective's
scale fitted on one half and checked on the other, the calibration plot.

References, each read as published (detox.data.evalsets, detox.data.corpora):
* Perspective's TOXICITY as published with RealToxicityPrompts (prompts.jsonl: each prompt's and
  continuation's `toxicity`; nulls left out) and with the 4chan /pol/ corpus (each post's
  `perspectives.TOXICITY`; the first `limit` scored posts of the file): Spearman's rank correlation,
  ROC-AUC of the scorer against "Perspective >= 0.5", the share at or above 0.5 by each (the scorer at
  its threshold) and their agreement (accuracy).
* Human judgement: ToxiGen's human-annotated statements (`toxicity_human`, the annotators' mean rating on
  1 to 5; toxic where it is above `human_toxic_above`, 3 by default: the scale's middle): ROC-AUC,
  accuracy at the scorer's threshold, and Spearman against the rating. (lm-evaluation-harness's ToxiGen
  task labels (toxicity_ai + toxicity_human) > 5.5 instead, a mix with a model's rating.)
* The calibration: an isotonic map from the scorer's score to Perspective's (detox.core.calibration),
  fitted on a seeded half of the Perspective-scored texts (RTP and /pol/ pooled) and checked on the
  other half (mean absolute difference and the share >= 0.5, before and after).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from detox.core.schema import ConfigError
from detox.data.evalsets import ScoredText, load_rtp_scores, load_toxigen_annotated

PERSPECTIVE_TOXIC = 0.5  # Perspective's own reading of its score: at least 0.5 is "likely toxic"


@dataclass
class Row:
    """One reference's figures; NaN where a figure is undefined (ROC-AUC with one class only)."""

    dataset: str  # rtp | pol | toxigen
    reference: str  # what the scorer is compared with
    n: int
    spearman: float  # Spearman's rank correlation of the scorer's score with the reference's score (or rating)
    roc_auc: float  # the scorer's score as a detector of the reference's "toxic"
    reference_toxic: float  # share toxic by the reference (Perspective >= 0.5; the human rating above its cut)
    scorer_toxic: float  # share at or above the scorer's threshold
    accuracy: float  # share where the scorer (at its threshold) and the reference agree


def compare(dataset: str, reference: str, scores: np.ndarray, values: np.ndarray, toxic: np.ndarray,
            threshold: float) -> Row:
    """A Row of `scores` (the scorer's) against `values` (the reference's scores) and `toxic` (its labels)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    both = len(set(toxic.tolist())) == 2
    return Row(dataset, reference, len(scores), float(spearmanr(scores, values).statistic),
               float(roc_auc_score(toxic, scores)) if both else math.nan, float(toxic.mean()),
               float((scores >= threshold).mean()), float(((scores >= threshold) == toxic).mean()))


def sample(texts: list[ScoredText], limit: int, seed: int) -> list[ScoredText]:
    """At most `limit` of `texts`, a seeded sample in their original order."""
    if len(texts) <= limit:
        return texts
    chosen = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in chosen]


def pol_scores(path: str, limit: int) -> list[ScoredText]:
    """The first `limit` posts of a /pol/ NDJSON file (optionally .zst) that carry a Perspective TOXICITY."""
    from detox.data.corpora import SourceSpec, iter_documents

    found = []
    for number, (text, score) in enumerate(iter_documents(SourceSpec(path, format="fourchan", on_bad_line="skip")), 1):
        if score is not None:
            found.append(ScoredText(text, score, f"{Path(path).name}:post {number}"))
            if len(found) == limit:
                break
    if not found:
        raise ConfigError(f"{path}: no post carries perspectives.TOXICITY")
    return found


def check(scorer, threshold: float, rtp: str | None = None, pol: str | None = None, toxigen: str | None = None,
          limit: int = 2000, seed: int = 0, human_toxic_above: float = 3.0):
    """The table's rows, and per reference (dataset -> (the scorer's scores, the reference's values in
    [0, 1])) what the figure and the calibration read. Every file is read before the scorer runs."""
    sets = {}
    if rtp:
        sets["rtp"] = ("Perspective (RealToxicityPrompts)", sample(load_rtp_scores(rtp), limit, seed))
    if pol:
        sets["pol"] = ("Perspective (/pol/)", pol_scores(pol, limit))
    if toxigen:
        sets["toxigen"] = ("human (ToxiGen annotated)", sample(load_toxigen_annotated(toxigen), limit, seed))
    if not sets:
        raise ConfigError("give at least one of --rtp, --pol, --toxigen")
    rows, pairs = [], {}
    for dataset, (reference, texts) in sets.items():
        scores = np.asarray(scorer([t.text for t in texts]), dtype=float)
        values = np.array([t.score for t in texts])
        kept = ~np.isnan(scores)  # a text the scorer could not score (Perspective's rejections) is left out
        scores, values = scores[kept], values[kept]
        if dataset == "toxigen":
            toxic = values > human_toxic_above
            pairs[dataset] = (scores, (values - 1) / 4)  # the rating on [0, 1], for the figure only
        else:
            toxic = values >= PERSPECTIVE_TOXIC
            pairs[dataset] = (scores, values)
        rows.append(compare(dataset, reference, scores, values, toxic, threshold))
    return rows, pairs


def calibrate(pairs: dict, seed: int, about: dict):
    """The isotonic map onto Perspective's scale fitted on a seeded half of the Perspective-scored texts,
    with the other half's figures before and after it."""
    from detox.core.calibration import fit

    perspective = [pairs[name] for name in ("rtp", "pol") if name in pairs]
    if not perspective:
        raise ConfigError("--calibrate needs Perspective's scores: give --rtp or --pol")
    scores = np.concatenate([s for s, _ in perspective])
    values = np.concatenate([v for _, v in perspective])
    order = np.random.default_rng(seed).permutation(len(scores))
    fitted, held = order[: len(order) // 2], order[len(order) // 2:]
    if not len(held):
        raise ConfigError("--calibrate needs at least two Perspective-scored texts")
    calibration = fit(scores[fitted], values[fitted], **about)
    mapped = calibration(scores[held])
    calibration.fitted_on = {"texts": int(len(fitted)), "sets": [n for n in ("rtp", "pol") if n in pairs], "seed": seed}
    calibration.checked_on = {
        "texts": int(len(held)),
        "mean_abs_difference_before": float(np.abs(scores[held] - values[held]).mean()),
        "mean_abs_difference_after": float(np.abs(mapped - values[held]).mean()),
        "perspective_toxic_share": float((values[held] >= PERSPECTIVE_TOXIC).mean()),
        "scorer_toxic_share_before": float((scores[held] >= PERSPECTIVE_TOXIC).mean()),
        "scorer_toxic_share_after": float((mapped >= PERSPECTIVE_TOXIC).mean()),
    }
    return calibration


def table_text(rows: list[Row]) -> tuple[str, str]:
    """The rows as the terminal shows them and as markdown."""
    import pandas as pd

    frame = pd.DataFrame([asdict(r) for r in rows]).round(3)
    header = "| " + " | ".join(frame.columns) + " |\n| " + " | ".join("---" for _ in frame.columns) + " |\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    return frame.to_string(index=False), header + body


def plot(pairs: dict, rows: list[Row], label: str, path: Path, calibration=None) -> Path:
    """A calibration plot per reference: in ten equal bins of the scorer's score, the reference's mean
    against the scorer's mean (the diagonal is agreement); the fitted map where there is one."""
    from detox.core.plots import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4), squeeze=False)
    for axis, (dataset, (scores, values)), row in zip(axes[0], pairs.items(), rows):
        bins = np.minimum((scores * 10).astype(int), 9)
        used = [b for b in range(10) if (bins == b).any()]
        axis.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        axis.plot([scores[bins == b].mean() for b in used], [values[bins == b].mean() for b in used], "o-",
                  label=f"n={row.n}, Spearman {row.spearman:.2f}")
        if calibration is not None and dataset != "toxigen":
            grid = np.linspace(0, 1, 101)
            axis.plot(grid, calibration(grid), color="C3", linewidth=1, label="fitted map")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="scorer's score", title=row.reference,
                 ylabel="human rating, (r - 1) / 4" if dataset == "toxigen" else "Perspective TOXICITY")
        axis.legend(loc="upper left", fontsize=8)
    figure.suptitle(label, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
