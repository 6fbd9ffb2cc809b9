"""Contrastive activation addition (CAA; Rimsky et al. 2024; "DiffMean" in AxBench, Wu et al. 2025):
`-alpha x` the difference of the mean residual stream of toxic and clean probe texts (the `residual`
stage, shared with ablate) is added to the decoder block's output at each chosen layer, every position,
while evaluating: alpha 1 moves the mean toxic text's state onto the mean clean one's at that layer.
Works on any family of the model table (detox.core.families), a pre-trained `model.path` included.

Like iti_curve it draws its trade-off curve: the `curve` stage measures the base model at every
strength of `method.alphas` (detox.methods._curve), and `curve_summary` reads the matched cost off it
(`detox.core.tradeoff.summary`: curve_* metrics, the same names as ITI's curve), so CAA and ITI
compare at the same CE budget. The full evaluation steers at `method.alpha`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Intervention, Plan, Stage
from detox.core.schema import ConfigError, number
from detox.core.tradeoff import CURVE_FILE, DEFAULT_CE_BUDGET, DEFAULT_MIN_WELL_FORMED, read_curve, summary
from detox.core.artifacts import STAGE
from detox.methods._curve import curve_spec, measure_curve
from detox.methods._residual import RESIDUAL, add_residual_stage, layers_label, validate_layers

CURVE, SUMMARY = "caa_curve", "caa_curve_summary"
DEFAULT_ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]


@dataclass
class CaaOptions(MethodOptions):
    name: str = "caa"
    layers: list[int] = field(default_factory=list)  # decoder blocks whose output gets the vector; empty: every one
    alpha: float = number(1.0, "[0, inf)")  # the full evaluation's strength, in differences of means
    alphas: list[float] = number(DEFAULT_ALPHAS, "[0, inf)")  # the curve's strengths: 0 first, increasing
    ce_budget: float = number(DEFAULT_CE_BUDGET, "[0, inf)")  # the matched cost read off the curve, nats
    min_well_formed: float = number(DEFAULT_MIN_WELL_FORMED, "[0, 100]")  # ... and the fewest well-formed generations (%)


def extend(plan: Plan, job) -> None:
    m = job.method
    add_residual_stage(plan, job)
    plan.intervention = Intervention(spec={"hooks": "decoder block output, vector added", "layers": list(m.layers),
                                           "alpha": m.alpha},
                                     inputs=(RESIDUAL,), make=lambda model, i: _adding(job, model, i, m.alpha))
    plan.add(Stage(CURVE, {"layers": list(m.layers), "alphas": list(m.alphas), **curve_spec(job)},
                   lambda out, i: _curve(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN, RESIDUAL),
                   logged=(CURVE_FILE,)))
    plan.add(Stage(SUMMARY, {"ce_budget": m.ce_budget, "min_well_formed": m.min_well_formed, "fixed_alpha": m.alpha},
                   lambda out, i: summary(read_curve(i[CURVE] / CURVE_FILE), m.ce_budget, m.min_well_formed, m.alpha),
                   inputs=(CURVE,)))


def _adding(job, model, inputs, alpha: float):
    from detox.steering import residual

    means = residual.load_diff_means(inputs[RESIDUAL])
    return residual.adding(model, residual.caa_vectors(means, list(job.method.layers), alpha))


def _curve(job, out, inputs) -> dict:
    return measure_curve(job, inputs, list(job.method.alphas), lambda model, alpha, _: _adding(job, model, inputs, alpha),
                         out, {"layers": list(job.method.layers)})


def label(job) -> str:
    return f"alpha={job.method.alpha:g} {layers_label(job.method.layers)}"


def validate(job) -> None:
    validate_layers(job, "caa")
    alphas = list(job.method.alphas)
    if len(alphas) < 2 or alphas[0] != 0 or any(b <= a for a, b in zip(alphas, alphas[1:])):
        raise ConfigError(f"method.alphas={alphas}: needs 0 first, then at least one larger strength, increasing")
    if not job.method.alpha <= alphas[-1]:
        raise ConfigError(f"method.alpha={job.method.alpha:g} lies beyond method.alphas (up to {alphas[-1]:g})")


register(Method("caa", CaaOptions, extend=extend, label=label, validate=validate,
                params=lambda job: {"caa_alpha": f"{job.method.alpha:g}", "layers": layers_label(job.method.layers)}))
