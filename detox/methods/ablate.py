"""Directional ablation (after Arditi et al. 2024): the concept's direction, the unit difference of the
mean residual stream of toxic and clean probe texts (the `residual` stage, shared with caa), is
projected out of the decoder block's output at each chosen layer, every position, while evaluating:
h <- h - (h.u) u. No strength: the model keeps none of that component at those sites. Works on any
family of the model table (detox.core.families), a pre-trained `model.path` included.
Options: `method.layers` (empty: every layer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Intervention, Plan
from detox.methods._residual import RESIDUAL, add_residual_stage, layers_label, validate_layers


@dataclass
class AblateOptions(MethodOptions):
    name: str = "ablate"
    layers: list[int] = field(default_factory=list)  # decoder blocks whose output loses the direction; empty: every one


def extend(plan: Plan, job) -> None:
    add_residual_stage(plan, job)
    plan.intervention = Intervention(spec={"hooks": "decoder block output, direction projected out",
                                           "layers": list(job.method.layers)},
                                     inputs=(RESIDUAL,), make=lambda model, i: _ablating(job, model, i))


def _ablating(job, model, inputs):
    from detox.steering import residual

    means = residual.load_diff_means(inputs[RESIDUAL])
    return residual.ablating(model, residual.ablation_directions(means, list(job.method.layers)))


register(Method("ablate", AblateOptions, extend=extend, label=lambda job: layers_label(job.method.layers),
                validate=lambda job: validate_layers(job, "ablate"),
                params=lambda job: {"layers": layers_label(job.method.layers)}))
