"""The best-ratio search's objective: how toxic the job's method leaves a model, at matched cost.

The paper finds 10 % toxic data best without a theory of why; `experiment=best_ratio` asks Hydra's
Optuna sweeper to find the ratio (and the ITI strength) that minimise the toxicity after steering,
among steerings that cost at most a CE budget. Every trial is an ordinary study job (one MLflow run);
with `search.objective=matched_cost` the job also evaluates the same base model unsteered (from the
cache when the study has it), logs the cost of its method beside the toxicity, and returns the
objective for the sweeper. Study and search share the matched-cost rule (`detox.core.tradeoff.within_budget`), so the
report's "ITI at matched cost" table and the search judge a steering alike.

`search.objective=curve_drop` (with `method=iti_curve`) rewards the drop instead of the level: the
trial measures its base model's trade-off curve and returns minus the drop of the toxicity at matched
cost read off it by interpolation (`detox.core.tradeoff`), so the search needs no alpha axis and a
base model that happens to be little toxic scores no better for it.
"""

from __future__ import annotations

import math

from detox.core.tradeoff import within_budget

INFEASIBLE = 100.0  # added to the CE cost of a steering outside the budget: worse than any toxicity in %


def matched_cost_objective(steered: dict[str, float], unsteered: dict[str, float], metric: str, ce_budget: float,
                           min_well_formed: float) -> dict[str, float]:
    """The metrics a search trial logs. `search_objective` is the toxicity `metric` (%) of the steered
    model when the steering is within budget; otherwise INFEASIBLE plus its CE cost in nats, so every
    infeasible trial ranks after every feasible one and the cheaper of two infeasible ones first (the
    sampler still learns which way the budget lies). CE on hostile contexts counts where measured."""
    for name in (metric, "ce_loss"):
        if not math.isfinite(steered.get(name, math.nan)) or not math.isfinite(unsteered.get(name, math.nan)):
            raise ValueError(f"search objective: metric {name!r} is missing or not finite "
                             f"(steered {steered.get(name)}, unsteered {unsteered.get(name)})")
    cost_clean = steered["ce_loss"] - unsteered["ce_loss"]
    hostile = "ce_hostile" in steered and "ce_hostile" in unsteered
    cost_hostile = steered["ce_hostile"] - unsteered["ce_hostile"] if hostile else cost_clean
    well_formed = steered.get("well_formed", 100.0)
    feasible = bool(within_budget(cost_clean, cost_hostile, well_formed, ce_budget, min_well_formed))
    cost = max(cost_clean, cost_hostile)
    return {"search_objective": steered[metric] if feasible else INFEASIBLE + cost,
            "search_feasible": float(feasible), "search_ce_cost": cost,
            "search_unsteered": unsteered[metric], "search_drop": unsteered[metric] - steered[metric]}


def curve_drop_objective(metrics: dict[str, float], metric: str) -> dict[str, float]:
    """The metrics a `curve_drop` trial logs, from its curve summary (`curve_*` metrics of
    method=iti_curve): `search_objective` is minus the drop of `metric` at matched cost (the sweeper
    minimises); not steering is always allowed, so every trial is feasible and the worst objective is 0."""
    names = {"drop": f"curve_{metric}_drop_at_budget", "unsteered": f"curve_{metric}_unsteered",
             "cost": "curve_cost_at_budget"}
    for name in names.values():
        if not math.isfinite(metrics.get(name, math.nan)):
            raise ValueError(f"search objective curve_drop: metric {name!r} is missing or not finite "
                             f"(method=iti_curve measures it for insult_probability and toxigen)")
    drop = metrics[names["drop"]]
    return {"search_objective": -drop, "search_feasible": 1.0, "search_ce_cost": metrics[names["cost"]],
            "search_unsteered": metrics[names["unsteered"]], "search_drop": drop}
