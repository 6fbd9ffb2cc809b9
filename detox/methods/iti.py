"""Inference-time intervention (Li et al. 2023): probe every attention head of the pre-trained model
for a toxicity direction, then shift the top heads' outputs away from it while generating.

Stages it adds: `probe` (per-head activations of the labelled probe texts, logistic probes, mass-mean
directions and sigma; keyed by the pre-trained model and the probe data, so every strength and
direction re-uses it) and `steer` (the shifts of one strength, direction and head count). The
evaluation then runs with the shifts added to each steered head's slice of the `o_proj` input at
every position (forward pre-hooks, so generated tokens under the KV cache are steered too).
Options: `ItiOptions` below, the steer and probe stages' options together, set by the `iti` config group
(`iti=weak|mid|strong`, `iti.alpha=`, `iti.top_k_heads=`, `iti.direction=`, `iti.random_scaling=`, and
the probing options `iti.val_fraction=`, `iti.solver=`, `iti.batch_size=`; conf/iti/mid.yaml documents
them). They are a group of their own, not `method.*`, so that a sweep can cross strengths with methods
that share them (iti, iti_curve); `method=iti` itself has no options.
"""

from __future__ import annotations

from dataclasses import dataclass

from detox.core import artifacts, contract, paper
from detox.core.artifacts import STAGE
from detox.core.methods import Method, register
from detox.core.plan import Intervention, Plan, Stage
from detox.core.schema import ConfigError
from detox.data.sources import source_kind
from detox.steering.config import ProbeConfig, SteerConfig

PROBE, STEER = "probe", "steer"  # the stages this method adds (the probes are shared by every strength)


@dataclass
class ItiOptions(SteerConfig, ProbeConfig):
    """The `iti` group: the steer stage's options and the probe stage's (detox.steering.config).
    conf/iti/weak.yaml and strong.yaml change only alpha, to the paper's (`detox.core.paper.ITI_STRENGTHS`,
    whose names are also the strength a job is labelled with)."""

    def strength_label(self) -> str:
        """The strength a job is shown with: the paper's name of its alpha (weak | mid | strong) or
        `alpha=<a>`, then the direction unless mass_mean (the random control with its scaling)."""
        name = paper.ITI_STRENGTHS.get(self.alpha, f"alpha={self.alpha:g}")
        if self.direction == "random":
            return f"{name} random({self.random_scaling})"
        return name if self.direction == "mass_mean" else f"{name} {self.direction}"


def extend(plan: Plan, job) -> None:
    iti = job.iti
    # "entanglement": the measure's version, so that a cache from before whitening is not taken for it
    plan.add(Stage(PROBE, {"seed": job.seed, "val_fraction": iti.val_fraction, "solver": iti.solver,
                             "entanglement": "whitened"},
                   lambda out, i: _probe(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN),
                   logged=("probe_accuracy.json", "probe_accuracy.png")))
    plan.add(Stage(STEER, {**steering_spec(iti), "seed": job.seed},
                   lambda out, i: _steer(job, out, i), inputs=(PROBE,)))
    plan.intervention = Intervention(spec={"hooks": "o_proj input, every position"}, inputs=(STEER,),
                                     make=_steering)


def steering_spec(iti: ItiOptions) -> dict:
    """What one steering's shifts are made of: their strength and their make."""
    return {"alpha": iti.alpha, **shifts_make(iti)}


def shifts_make(iti: ItiOptions) -> dict:
    """What shifts are made of apart from their strength (so a curve over strengths shares it): the head
    count, the direction, and the random control's scaling, which no other direction reads (so it is part
    of no other steering's identity)."""
    make = {"top_k_heads": iti.top_k_heads, "direction": iti.direction}
    return {**make, "random_scaling": iti.random_scaling} if iti.direction == "random" else make


def _probe(job, out, inputs, model_dir=None) -> dict:
    """The probe stage's build; `model_dir`: another model than the pre-trained one's `hf/` (a snapshot)."""
    from detox.core.models import load_model
    from detox.data.parts import has_part, load_part
    from detox.steering import probe

    sources = inputs[STAGE.SOURCES]
    if not has_part(sources, "probe"):
        raise ConfigError("method=iti needs probe texts (JSON lines {\"text\", \"label\"}): data.files.probe, "
                          "or data.corpora.probe with data=paper")
    model, tokenizer = load_model(model_dir or inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL)
    rows = load_part(sources, "probe")
    return probe.probe_stage(model, tokenizer, rows, job.seed, job.iti.val_fraction, job.iti.solver,
                             job.iti.batch_size, out)


def _steer(job, out, inputs) -> dict:
    from detox.steering import steer

    iti = job.iti
    return steer.steer_stage(inputs[PROBE], iti.top_k_heads, iti.alpha, iti.direction, iti.random_scaling,
                             job.seed, out)


def _steering(model, inputs):
    from detox.steering import steer

    return steer.steering(model, steer.load_shifts(inputs[STEER]))


def label(job) -> str:
    """weak / mid / strong when alpha is the paper's, else `alpha=<a>`; plus the direction (ItiOptions)."""
    return job.iti.strength_label()


def params(job) -> dict[str, str]:
    """What the steering is made of, as the report groups and filters runs by it (detox.core.contract)."""
    iti, c = job.iti, contract
    logged = {c.ITI_ALPHA: c.number(iti.alpha), c.ITI_DIRECTION: iti.direction, c.ITI_TOP_K_HEADS: str(iti.top_k_heads)}
    if iti.direction == "random":  # the only direction that reads it
        logged[c.ITI_RANDOM_SCALING] = iti.random_scaling
    return logged


def validate(job) -> None:
    heads = job.model.n_layers * job.model.n_heads
    if not job.model.path and job.iti.top_k_heads > heads:  # a pre-trained model's heads: checked once probed
        raise ConfigError(f"iti.top_k_heads={job.iti.top_k_heads} exceeds the model's {heads} heads "
                          f"(model.n_layers x model.n_heads)")
    source_kind(job.data).require("probe", "method=iti")  # the probe file given, present and well-formed


register(Method("iti", extend=extend, label=label, params=params, validate=validate))
