"""The residual stage that the residual-stream steerings (caa, ablate) share: per layer, the difference
of the mean decoder-block output of the toxic and the clean probe texts at their last token
(detox.steering.residual). Keyed by the base model and the probe texts, so every strength and layer
choice of both methods re-uses it. The probe texts and their batch size are ITI's (the `iti` group's
`batch_size`); the head probes themselves are not needed. A module whose name starts with "_"
registers nothing."""

from __future__ import annotations

from detox.core import artifacts
from detox.core.artifacts import STAGE
from detox.core.plan import Plan, Stage
from detox.core.schema import ConfigError
from detox.data.sources import source_kind

RESIDUAL = "residual"


def add_residual_stage(plan: Plan, job) -> None:
    plan.add(Stage(RESIDUAL, {"probe_texts": "label"}, lambda out, i: _residual(job, out, i),
                   inputs=(STAGE.SOURCES, STAGE.PRETRAIN), logged=("separation.json",)))


def _residual(job, out, inputs) -> dict:
    from detox.core.models import load_model
    from detox.data.parts import load_part
    from detox.steering import residual

    model, tokenizer = load_model(inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL)
    return residual.residual_stage(model, tokenizer, load_part(inputs[STAGE.SOURCES], "probe"), job.iti.batch_size, out)


def validate_layers(job, method: str) -> None:
    """The chosen layers exist (a pre-trained model's are checked when it is loaded) and the probe texts are there."""
    layers = list(job.method.layers)
    if len(set(layers)) != len(layers):
        raise ConfigError(f"method.layers={layers}: a layer repeats")
    if not job.model.path and any(layer >= job.model.n_layers for layer in layers):
        raise ConfigError(f"method.layers={layers}: the model has {job.model.n_layers} layers (0..{job.model.n_layers - 1})")
    source_kind(job.data).require("probe", f"method={method}")


def layers_label(layers) -> str:
    return "all layers" if not layers else "layers " + ",".join(str(i) for i in layers)
