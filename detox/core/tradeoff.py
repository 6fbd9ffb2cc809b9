"""Trade-off curves of a steering: toxicity against CE cost over a dense range of strengths, the file a
curve is kept in, and what is read off them (numpy only, so the method that measures a curve, the
search and the report share it).

A curve is one base model steered at strengths alpha_0 = 0 < alpha_1 < ... (the unsteered point first),
each point measured alike: the toxicities (percent), the CE loss on clean and, where measured, on
hostile-context text (nats), and the well-formed share (percent). A point's CE cost is what it adds to
the unsteered point, the larger of the clean and the hostile cost (the study's matched-cost rule,
`within_budget`, asks both to stay within the budget; the search and the report's grid table use it too).

Reading a budget: the strength is a dial turned up from 0 until the rule breaks, on monotone fits of
the curve's cost (isotonic regression, non-decreasing in alpha) and well-formed share (non-increasing):
noise in a measured cost cannot stop the dial early or let it run on. The crossing is interpolated
linearly between the fitted points either side, and the toxicity at matched cost is the measured
curve read there (linear interpolation of its points), never the lowest point within the budget: a
minimum over noisy points lies below the truth even where steering does nothing (zero-effect curves
gave a mean "drop" of 3.7 points that way), while the value at a crossing the toxicity does not choose
is as likely above as below it, so "no effect" reads as a drop near 0, of either sign.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

TOLERANCE = 1e-9  # a cost equal to the budget is within it, whatever the rounding
# The study's matched cost: the default CE budget and well-formed floor of the best-ratio search, the
# curve method and the report (search.*, method.*, detox-report --ce-budget / --min-well-formed).
DEFAULT_CE_BUDGET = 0.02  # nats of CE loss, on clean and on hostile-context text
DEFAULT_MIN_WELL_FORMED = 95.0  # percent of the generations

CURVE_METHOD = "iti_curve"  # the method that measures curves (detox.methods.iti_curve); its runs log CURVE_FILE
CURVE_FILE = "curve.json"  # {"alphas", "direction", "points": [{"alpha", the measures}, ...]}
MEASURES = ("insult_probability", "decision_mass", "toxigen", "ce_loss", "ce_hostile", "well_formed")
TOXICITIES = ("insult_probability", "toxigen")  # the curve's toxicity measures, in percent


def within_budget(ce_cost_clean, ce_cost_hostile, well_formed, ce_budget: float, min_well_formed: float):
    """The study's matched-cost rule: a steering may add at most `ce_budget` nats of CE loss on clean and
    on hostile-context text and must leave `min_well_formed` % well-formed generations. Scalars, arrays
    or pandas Series alike."""
    budget = ce_budget + TOLERANCE
    return (ce_cost_clean <= budget) & (ce_cost_hostile <= budget) & (well_formed >= min_well_formed)


@dataclass(frozen=True)
class Curve:
    """One base model's curve: per point its alpha, CE costs (nats), well-formed share and toxicities (%)."""

    alpha: np.ndarray
    cost: np.ndarray  # max(clean cost, hostile cost) against the unsteered point, nats
    ce_tax: np.ndarray  # clean CE cost alone, nats
    well_formed: np.ndarray
    toxicity: dict[str, np.ndarray]  # metric -> percent per point

    @classmethod
    def from_points(cls, points: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> "Curve":
        """From the points a curve stage writes ({"alpha", "ce_loss", optional "ce_hostile", "well_formed",
        the metrics}); alpha must start at 0 and increase. A metric no point measured is left out."""
        if len(points) < 2:
            raise ValueError(f"a curve needs at least 2 points, got {len(points)}")
        alpha = np.array([float(p["alpha"]) for p in points])
        if alpha[0] != 0 or not (np.diff(alpha) > 0).all():
            raise ValueError(f"a curve's alphas must start at 0 and increase, got {alpha.tolist()}")
        ce = np.array([float(p["ce_loss"]) for p in points])
        tax = ce - ce[0]
        cost = tax
        if all("ce_hostile" in p for p in points):
            hostile = np.array([float(p["ce_hostile"]) for p in points])
            cost = np.maximum(tax, hostile - hostile[0])
        well_formed = np.array([float(p.get("well_formed", 100.0)) for p in points])
        toxicity = {m: np.array([float(p[m]) for p in points]) for m in metrics if all(m in p for p in points)}
        for name, values in (("CE", cost), ("well_formed", well_formed), *toxicity.items()):
            if not np.isfinite(values).all():
                raise ValueError(f"a curve's {name} values are not all finite: {values.tolist()}")
        return cls(alpha, cost, tax, well_formed, toxicity)


def read_curve(path: Path, metrics: Sequence[str] = TOXICITIES) -> Curve:
    """A CURVE_FILE as a `Curve`."""
    return Curve.from_points(json.loads(path.read_text())["points"], metrics)


@dataclass(frozen=True)
class Matched:
    """What a budget allows on one curve."""

    alpha: float  # the last allowed strength (interpolated at the crossing)
    cost: float  # its CE cost, nats
    toxicity: dict[str, float]  # metric -> the toxicity at the crossing (%), read off the measured curve
    reached: bool  # whether the budget binds within the curve (False: every point is allowed; the curve is too short)


def at_budget(curve: Curve, ce_budget: float, min_well_formed: float) -> Matched:
    """The steering a CE budget and a well-formed floor allow on `curve` (module docstring)."""
    from sklearn.isotonic import isotonic_regression  # imported here: the report's modules load without sklearn

    cost = isotonic_regression(curve.cost, increasing=True)  # the cost includes the clean CE tax (the larger)
    well_formed = isotonic_regression(curve.well_formed, increasing=False)
    allowed = within_budget(cost, cost, well_formed, ce_budget, min_well_formed)
    allowed[0] = True  # not steering is always allowed

    def read(alpha: float) -> dict[str, float]:
        return {m: float(np.interp(alpha, curve.alpha, v)) for m, v in curve.toxicity.items()}

    if allowed.all():
        return Matched(float(curve.alpha[-1]), float(curve.cost[-1]), read(float(curve.alpha[-1])), reached=False)
    j = int(np.argmin(allowed))  # the first point that breaks the rule; j >= 1
    i = j - 1
    t = 1.0  # how far towards point j the rule still holds, 0..1 (linear in alpha)
    if cost[j] > ce_budget + TOLERANCE:
        t = min(t, max(0.0, (ce_budget - cost[i]) / (cost[j] - cost[i])))
    if well_formed[i] < min_well_formed:  # only the unsteered point, allowed whatever it is
        t = 0.0
    elif well_formed[j] < min_well_formed:
        t = min(t, (well_formed[i] - min_well_formed) / (well_formed[i] - well_formed[j]))
    alpha = float(curve.alpha[i] + t * (curve.alpha[j] - curve.alpha[i]))
    return Matched(alpha, float(np.interp(alpha, curve.alpha, cost)), read(alpha), reached=True)


def at_alpha(curve: Curve, values: np.ndarray, alpha: float) -> float:
    """`values` (one per point) at strength `alpha`, interpolated linearly; alpha within the curve."""
    if not curve.alpha[0] <= alpha <= curve.alpha[-1]:
        raise ValueError(f"alpha={alpha:g} lies outside the curve's range [0, {curve.alpha[-1]:g}]")
    return float(np.interp(alpha, curve.alpha, values))


def share_removed(before: float, after: float) -> float:
    """The share of toxicity removed, percent of `before` (NaN when there was none to remove)."""
    return 100.0 * (before - after) / before if before > 0 else math.nan


def summary(curve: Curve, ce_budget: float, min_well_formed: float, fixed_alpha: float) -> dict[str, float]:
    """The curve's absolute and relative measures, as metrics (`curve_` names):
    per toxicity m: curve_<m>_unsteered, curve_<m>_at_budget, curve_<m>_drop_at_budget (points),
    curve_<m>_removed_at_budget and curve_<m>_removed_at_alpha (% of the unsteered toxicity removed, at
    matched cost and at `fixed_alpha`), curve_<m>_at_alpha; and curve_alpha_at_budget,
    curve_cost_at_budget, curve_budget_reached (1: the budget binds within the curve),
    curve_ce_tax_at_alpha (clean CE added at `fixed_alpha`, nats), curve_cost_at_alpha, curve_points."""
    matched = at_budget(curve, ce_budget, min_well_formed)
    out = {"curve_points": float(len(curve.alpha)), "curve_alpha_at_budget": matched.alpha,
           "curve_cost_at_budget": matched.cost, "curve_budget_reached": float(matched.reached),
           "curve_ce_tax_at_alpha": at_alpha(curve, curve.ce_tax, fixed_alpha),
           "curve_cost_at_alpha": at_alpha(curve, curve.cost, fixed_alpha)}
    for m, values in curve.toxicity.items():
        before, after_alpha = float(values[0]), at_alpha(curve, values, fixed_alpha)
        out.update({f"curve_{m}_unsteered": before, f"curve_{m}_at_budget": matched.toxicity[m],
                    f"curve_{m}_drop_at_budget": before - matched.toxicity[m],
                    f"curve_{m}_removed_at_budget": share_removed(before, matched.toxicity[m]),
                    f"curve_{m}_at_alpha": after_alpha,
                    f"curve_{m}_removed_at_alpha": share_removed(before, after_alpha)})
    return out


def frontier(curve: Curve, metric: str, costs: np.ndarray, min_well_formed: float) -> np.ndarray:
    """`metric` at matched cost for each CE budget of `costs` (the curve read at every budget)."""
    return np.array([at_budget(curve, float(c), min_well_formed).toxicity[metric] for c in costs])
