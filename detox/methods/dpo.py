"""Direct Preference Optimisation (Rafailov et al. 2023; the paper's DPO baseline): the pre-trained
model is trained, against a frozen copy of itself, to prefer a non-toxic continuation of a prompt
over a toxic one; the trained model is evaluated. Cached per pre-trained model.

The pairs are the sources' `preference` part ({"prompt", "chosen", "rejected"} lines): the embedded
world writes them from its own grammar (the civil and the insulting continuation of one hostile
prompt, on prompts disjoint from the evaluation's); with data=files give `data.files.preference`."""

from __future__ import annotations

from dataclasses import asdict

from detox.core import artifacts
from detox.config import DpoConfig
from detox.methods import Method, register
from detox.core.plan import Plan, Stage
from detox.core.schema import ConfigError


def extend(plan: Plan, job) -> None:
    plan.add(Stage("dpo", {"dpo": asdict(job.method), "seed": job.seed},
                   lambda out, i: _dpo(job, out, i), inputs=("sources", "pretrain")))
    plan.model = "dpo"


def _dpo(job, out, inputs) -> dict:
    from detox import data
    from detox.training import posttrain

    if not data.has_part(inputs["sources"], "preference"):
        raise ConfigError("method=dpo needs preference pairs: data.files.preference "
                          "({\"prompt\", \"chosen\", \"rejected\"} lines)")
    rows = data.load_part(inputs["sources"], "preference")[:job.method.max_pairs]
    pairs = [(row["prompt"], row["chosen"], row["rejected"]) for row in rows]
    return posttrain.dpo(inputs["pretrain"] / artifacts.HF_MODEL, pairs, job.method, job.seed, out)


def validate(job) -> None:
    if job.data.source == "files" and not job.data.files.preference:
        raise ConfigError("method=dpo needs data.files.preference: {\"prompt\", \"chosen\", \"rejected\"} lines")


register(Method("dpo", DpoConfig, extend=extend, validate=validate))
