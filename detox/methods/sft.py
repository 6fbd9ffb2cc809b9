"""Supervised fine-tuning on non-toxic text (the paper's SFT baseline): the pre-trained model is
fine-tuned, through the same Lightning stack as pre-training, on documents of the clean source that
the job's scorer rates non-toxic; the fine-tuned model is evaluated. Cached per pre-trained model."""

from __future__ import annotations

from dataclasses import asdict

from detox.core import artifacts
from detox.config import SftConfig
from detox.methods import Method, register
from detox.core.plan import Plan, Stage


def extend(plan: Plan, job) -> None:
    plan.add(Stage("sft", {"sft": asdict(job.method), "scorer": asdict(job.scorer), "seed": job.seed},
                   lambda out, i: _sft(job, out, i), inputs=("sources", "pretrain")))
    plan.model = "sft"


def _sft(job, out, inputs) -> dict:
    from detox import data
    from detox.training import posttrain
    from detox.evaluation import scorers

    texts = [row["text"] for row in data.load_part(inputs["sources"], "clean")]
    scores = scorers.make_scorer(job.scorer)(texts)
    clean = [text for text, score in zip(texts, scores) if score < job.scorer.threshold]
    metrics = posttrain.sft(inputs["pretrain"] / artifacts.HF_MODEL, clean, job.method, job.seed, out)
    return {**metrics, "sft_dropped_toxic_docs": len(texts) - len(clean)}


register(Method("sft", SftConfig, extend=extend))
