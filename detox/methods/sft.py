"""Supervised fine-tuning on non-toxic text (the paper's SFT baseline): the pre-trained model is
fine-tuned, through the same Lightning stack as pre-training, on documents of the clean source that
the job's scorer rates non-toxic; the fine-tuned model is evaluated. Cached per pre-trained model."""

from __future__ import annotations

from dataclasses import asdict

from detox.core import artifacts
from detox.core.artifacts import STAGE
from detox.config import SftConfig
from detox.methods import Method, register
from detox.core.plan import Plan, Stage

SFT = "sft"  # the stage this method adds: the fine-tuned model, evaluated


def extend(plan: Plan, job) -> None:
    plan.add(Stage(SFT, {"sft": asdict(job.method), "scorer": job.scorer.result_spec(), "seed": job.seed},
                   lambda out, i: _sft(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN)))
    plan.model = SFT


def _sft(job, out, inputs) -> dict:
    from detox.data.parts import load_part
    from detox.training import posttrain
    from detox.evaluation import scorers

    texts = [row["text"] for row in load_part(inputs[STAGE.SOURCES], "clean")]
    scores = scorers.make_scorer(job.scorer, job.root)(texts)
    clean = [text for text, score in zip(texts, scores) if score < job.scorer.threshold]
    metrics = posttrain.sft(inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL, clean, job.method, job.seed, out)
    return {**metrics, "sft_dropped_toxic_docs": len(texts) - len(clean)}


register(Method("sft", SftConfig, extend=extend))
