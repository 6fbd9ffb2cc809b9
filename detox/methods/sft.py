"""Supervised fine-tuning on non-toxic text (the paper's SFT baseline): the pre-trained model is
fine-tuned, through the same Lightning stack as pre-training, on documents of the clean source that
the job's scorer rates non-toxic; the fine-tuned model is evaluated. Cached per pre-trained model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from detox import artifacts
from detox.methods import Method, MethodOptions, register
from detox.plan import Plan, Stage
from detox.schema import choice, number


@dataclass
class SftConfig(MethodOptions):
    name: str = "sft"
    steps: int = number(200, "[1, inf)")  # optimiser steps (the documents are cycled through as often as needed)
    lr: float = number(1e-4, "(0, inf)")  # peak learning rate
    batch_size: int = number(16, "[1, inf)")  # documents per optimiser step
    max_docs: int = number(2000, "[1, inf)")  # non-toxic documents used (the first ones of the clean source)
    max_tokens: int = number(256, "[2, inf)")  # tokens kept per document, end-of-document tokens included
    warmup_fraction: float = number(0.05, "[0, 1)")  # share of steps with linear warm-up before the cosine decay
    weight_decay: float = number(0.0, "[0, inf)")
    grad_clip: float = number(1.0, "(0, inf)")
    accelerator: str = choice("auto", "auto", "cpu", "gpu")  # Lightning accelerator (auto: a GPU if there is one)


def extend(plan: Plan, job) -> None:
    plan.add(Stage("sft", {"sft": asdict(job.method), "scorer": asdict(job.scorer), "seed": job.seed},
                   lambda out, i: _sft(job, out, i), inputs=("sources", "pretrain")))
    plan.model = "sft"


def _sft(job, out, inputs) -> dict:
    from detox import data, posttrain, scorers

    texts = [row["text"] for row in data.load_part(inputs["sources"], "clean")]
    scores = scorers.make_scorer(job.scorer)(texts)
    clean = [text for text, score in zip(texts, scores) if score < job.scorer.threshold]
    metrics = posttrain.sft(inputs["pretrain"] / artifacts.HF_MODEL, clean, job.method, job.seed, out)
    return {**metrics, "sft_dropped_toxic_docs": len(texts) - len(clean)}


register(Method("sft", SftConfig, extend=extend))
