"""Direct Preference Optimisation (Rafailov et al. 2023; the paper's DPO baseline): the pre-trained
model is trained, against a frozen copy of itself, to prefer a non-toxic continuation of a prompt
over a toxic one; the trained model is evaluated. Cached per pre-trained model.

The pairs are the sources' `preference` part ({"prompt", "chosen", "rejected"} lines): the embedded
world writes them from its own grammar (the civil and the insulting continuation of one hostile
prompt, on prompts disjoint from the evaluation's); with data=files give `data.files.preference`, with
data=paper `data.corpora.preference`. Without one the job is refused before any stage (`validate`), the
file read and checked there."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from detox.core import artifacts
from detox.core.artifacts import STAGE
from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan, Stage
from detox.core.schema import ConfigError
from detox.data.sources import source_kind
from detox.training.config import DpoConfig

DPO = "dpo"  # the stage this method adds: the preference-trained model, evaluated


@dataclass
class DpoOptions(DpoConfig, MethodOptions):
    """method=dpo's options (conf/method/dpo.yaml): the preference training's (detox.training.config.DpoConfig)."""

    name: str = "dpo"


def extend(plan: Plan, job) -> None:
    plan.add(Stage(DPO, {"dpo": asdict(job.method), "seed": job.seed},
                   lambda out, i: _dpo(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN)))
    plan.model = DPO


def _dpo(job, out, inputs) -> dict:
    from detox.data.parts import has_part, load_part
    from detox.training import posttrain

    if not has_part(inputs[STAGE.SOURCES], "preference"):
        raise ConfigError("method=dpo needs preference pairs ({\"prompt\", \"chosen\", \"rejected\"} lines): "
                          "data.files.preference, or data.corpora.preference with data=paper")
    rows = load_part(inputs[STAGE.SOURCES], "preference")[:job.method.max_pairs]
    pairs = [(row["prompt"], row["chosen"], row["rejected"]) for row in rows]
    return posttrain.dpo(inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL, pairs, job.method, job.seed, out)


def validate(job) -> None:
    source_kind(job.data).require("preference", "method=dpo")


register(Method("dpo", DpoOptions, extend=extend, validate=validate))
