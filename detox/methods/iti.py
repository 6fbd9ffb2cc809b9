"""Inference-time intervention (Li et al. 2023): probe every attention head of the pre-trained model
for a toxicity direction, then shift the top heads' outputs away from it while generating.

Stages it adds: `probe` (per-head activations of the labelled probe texts, logistic probes, mass-mean
directions and sigma; keyed by the pre-trained model and the probe data, so every strength and
direction re-uses it) and `steer` (the shifts of one strength, direction and head count). The
evaluation then runs with the shifts added to each steered head's slice of the `o_proj` input at
every position (forward pre-hooks, so generated tokens under the KV cache are steered too).
Options: `conf/method/iti.yaml` (probing) and the `iti` group (strength: `iti=weak|mid|strong`,
`iti.alpha=`, `iti.top_k_heads=`, `iti.direction=`, `iti.random_scaling=`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from detox.core import artifacts
from detox.methods import Method, MethodOptions, register
from detox.core.plan import Intervention, Plan, Stage
from detox.core.schema import ConfigError, choice, number

PRESETS = {"weak": 4.0, "mid": 8.0, "strong": 12.0}  # the alphas of conf/iti/{weak,mid,strong}.yaml (the paper's)


@dataclass
class ItiOptions(MethodOptions):
    name: str = "iti"
    val_fraction: float = number(0.2, "(0, 1)")  # probe texts held out to score each probe
    solver: str = choice("auto", "auto", "sklearn", "batched")  # per-head scikit-learn loop | all heads at once
    batch_size: int = number(64, "[1, inf)")  # texts per forward pass when reading activations


def extend(plan: Plan, job) -> None:
    options, iti = job.method, job.iti
    # "entanglement": the measure's version, so that a cache from before whitening is not taken for it
    plan.add(Stage("probe", {"seed": job.seed, "val_fraction": options.val_fraction, "solver": options.solver,
                             "entanglement": "whitened"},
                   lambda out, i: _probe(job, out, i), inputs=("sources", "pretrain"),
                   logged=("probe_accuracy.json", "probe_accuracy.png")))
    steering = asdict(iti)
    if iti.direction != "random":
        del steering["random_scaling"]  # read only by the random control: not part of other steerings' identity
    plan.add(Stage("steer", {"iti": steering, "seed": job.seed},
                   lambda out, i: _steer(job, out, i), inputs=("probe",)))
    plan.intervention = Intervention(spec={"hooks": "o_proj input, every position"}, inputs=("steer",),
                                     make=_steering)


def _probe(job, out, inputs) -> dict:
    from detox import data
    from detox.core.models import load_model
    from detox.steering import probe

    sources = inputs["sources"]
    if not data.has_part(sources, "probe"):
        raise ConfigError("method=iti needs probe texts: data.files.probe (JSON lines {\"text\", \"label\"})")
    model, tokenizer = load_model(inputs["pretrain"] / artifacts.HF_MODEL)
    rows = data.load_part(sources, "probe")
    return probe.probe_stage(model, tokenizer, rows, job.seed, job.method.val_fraction, job.method.solver,
                             job.method.batch_size, out)


def _steer(job, out, inputs) -> dict:
    from detox.steering import steer

    iti = job.iti
    return steer.steer_stage(inputs["probe"], iti.top_k_heads, iti.alpha, iti.direction, iti.random_scaling,
                             job.seed, out)


def _steering(model, inputs):
    from detox.steering import steer

    return steer.steering(model, steer.load_shifts(inputs["steer"]))


def label(job) -> str:
    """weak / mid / strong as in the paper when alpha is the preset's; else the alpha; plus the direction."""
    iti = job.iti
    name = iti.strength if PRESETS.get(iti.strength) == iti.alpha else f"alpha={iti.alpha:g}"
    if iti.direction == "random":
        return f"{name} random({iti.random_scaling})"
    return name if iti.direction == "mass_mean" else f"{name} {iti.direction}"


def validate(job) -> None:
    heads = job.model.n_layers * job.model.n_heads
    if job.iti.top_k_heads > heads:
        raise ConfigError(f"iti.top_k_heads={job.iti.top_k_heads} exceeds the model's {heads} heads "
                          f"(model.n_layers x model.n_heads)")
    if job.data.source == "files" and not job.data.files.probe:
        raise ConfigError("method=iti needs data.files.probe: labelled texts {\"text\", \"label\": 0|1} to probe")


register(Method("iti", ItiOptions, extend=extend, label=label, validate=validate))
