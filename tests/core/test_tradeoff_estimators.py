"""The matched-cost reading cannot fool itself: on simulated 10-seed studies whose steering does nothing,
the drop it reads averages 0 and is "seen" in at most 5 % of studies, while a planted drop is recovered.
The reading it replaced (the lowest toxicity within the budget) is run beside it and printed:

    HF_HUB_OFFLINE=1 python -m pytest -s tests/core/test_tradeoff_estimators.py
"""

import numpy as np
import pytest

from detox.core import tradeoff
from detox.methods.iti_curve import DEFAULT_ALPHAS
from detox.report.frontier import drop_seen

ALPHAS = np.array(DEFAULT_ALPHAS)
STUDIES, SEEDS, BUDGET = 400, 10, tradeoff.DEFAULT_CE_BUDGET


def lowest_within_budget(curve: tradeoff.Curve) -> float:
    """The earlier reading: the lowest toxicity of the allowed points and of the first crossing."""
    allowed = curve.cost <= BUDGET + tradeoff.TOLERANCE
    allowed[0] = True
    if allowed.all():
        return float(curve.toxicity["insult_probability"].min())
    j = int(np.argmin(allowed))
    t = (BUDGET - curve.cost[j - 1]) / (curve.cost[j] - curve.cost[j - 1])
    tox = curve.toxicity["insult_probability"]
    return min(float(tox[:j].min()), float(tox[j - 1] + t * (tox[j] - tox[j - 1])))


def simulated_curve(rng, planted_slope: float) -> tradeoff.Curve:
    """A curve with the random control's costs (the budget crossed near alpha 2, measured with noise) and
    a toxicity of 40 % minus `planted_slope` points per unit of alpha, plus a random walk of measurement
    noise (1.5 points a step)."""
    cost = 0.005 * ALPHAS ** 2 + rng.normal(0, 0.002, len(ALPHAS))
    cost[0] = 0.0
    noise = np.concatenate([[0.0], np.cumsum(rng.normal(0, 1.5, len(ALPHAS) - 1))])
    tox = 40 - planted_slope * ALPHAS + noise
    points = [{"alpha": a, "ce_loss": 0.7 + c, "insult_probability": t} for a, c, t in zip(ALPHAS, cost, tox)]
    return tradeoff.Curve.from_points(points, ["insult_probability"])


def simulate(planted_slope: float, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per estimator: the mean drop over every simulated seed, and the share of studies that see a drop."""
    rng = np.random.default_rng(seed)
    drops = {"lowest within budget (before)": np.empty((STUDIES, SEEDS)),
             "at the crossing of the monotone fit (now)": np.empty((STUDIES, SEEDS))}
    for study in range(STUDIES):
        for s in range(SEEDS):
            curve = simulated_curve(rng, planted_slope)
            before = curve.toxicity["insult_probability"][0]
            old, new = drops
            drops[old][study, s] = before - lowest_within_budget(curve)
            drops[new][study, s] = before - tradeoff.at_budget(curve, BUDGET, 100.0).toxicity["insult_probability"]
    found = {name: (float(d.mean()), float(np.mean([drop_seen(row) for row in d]))) for name, d in drops.items()}
    print(f"\nplanted slope {planted_slope:g} points per alpha ({STUDIES} studies of {SEEDS} seeds):")
    for name, (mean, seen) in found.items():
        print(f"  {name:42s} mean drop {mean:+6.2f} points, drop seen in {100 * seen:5.1f} % of studies")
    return found


@pytest.mark.slow
def test_zero_effect_curves_read_as_no_drop():
    found = simulate(planted_slope=0.0)
    old, new = found.values()
    assert abs(new[0]) <= 0.5 and new[1] <= 0.05
    assert old[0] > 2 and old[1] > 0.5  # the reading it replaced: a drop out of noise alone


@pytest.mark.slow
def test_a_planted_drop_is_recovered():
    _, (mean, seen) = simulate(planted_slope=5.0, seed=1).values()  # 10 points at the crossing, alpha 2
    assert mean == pytest.approx(10.0, abs=1.0) and seen >= 0.8
