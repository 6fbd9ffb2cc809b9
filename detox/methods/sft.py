"""Supervised fine-tuning on non-toxic text (the paper's SFT baseline): the pre-trained model is
fine-tuned, through the same Lightning stack as pre-training, on documents of the clean source that
the job's scorer rates non-toxic; the fine-tuned model is evaluated. Cached per pre-trained model.

The documents are the clean training stream of the job's source kind, in its fixed order (the
world's and the files' clean part; with data=paper, C4 streamed): read and scored in batches only
until `max_docs` of them score below the scorer's threshold (every one scored by the job's scorer, through
its score cache; one it could not score, a text Perspective rejected, is left out). The stage writes
the documents it took with their scores (`sft_documents.jsonl`, logged with the run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from detox.core import artifacts
from detox.core.artifacts import STAGE
from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan, Stage
from detox.data.sources import source_kind
from detox.training.config import SftConfig

SFT = "sft"  # the stage this method adds: the fine-tuned model, evaluated
DOCUMENTS = "sft_documents.jsonl"  # the stage's record of the documents it fine-tuned on: {"text", "toxicity"}


@dataclass
class SftOptions(SftConfig, MethodOptions):
    """method=sft's options (conf/method/sft.yaml): the fine-tuning's (detox.training.config.SftConfig)."""

    name: str = "sft"


def extend(plan: Plan, job) -> None:
    # version 2: the documents streamed from the source kind until max_docs non-toxic ones, and recorded
    plan.add(Stage(SFT, {"sft": asdict(job.method), "scorer": job.scorer.result_spec(), "seed": job.seed},
                   lambda out, i: _sft(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN), version=2,
                   logged=(DOCUMENTS,)))
    plan.model = SFT


def _sft(job, out, inputs) -> dict:
    from detox.core.jsonl import write_jsonl
    from detox.evaluation import scorers
    from detox.training import posttrain

    documents = source_kind(job.data).documents("clean", inputs[STAGE.SOURCES], job.seed)
    scorer = scorers.bulk_scorer(job.scorer, job.root)
    taken, read = non_toxic_documents(documents, scorer, job.scorer.threshold, job.method.max_docs,
                                      job.scorer.batch_size)
    write_jsonl(out / DOCUMENTS, taken)
    metrics = posttrain.sft(inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL, [row["text"] for row in taken], job.method,
                            job.seed, out)
    return {**metrics, **scorers.scorer_metrics(scorer), "sft_read_docs": read,
            "sft_dropped_toxic_docs": read - len(taken)}


def non_toxic_documents(documents, scorer, threshold: float, max_docs: int, batch_size: int) -> tuple[list[dict], int]:
    """The first `max_docs` of `documents` scored below `threshold`, as {"text", "toxicity"} rows, and
    how many documents were read to find them (scored in batches, the stream read no further); a
    document without a score (NaN) is not taken."""
    from detox.data.annotate import scored_documents

    taken, read = [], 0
    for document, score in scored_documents(documents, scorer, batch_size):
        read += 1
        if score < threshold:  # False for NaN
            taken.append({"text": document.text, "toxicity": score})
            if len(taken) == max_docs:
                break
    return taken, read


def scored_documents(job) -> int:
    """At least max_docs: the filter reads the clean stream until that many score below the threshold."""
    return job.method.max_docs


register(Method("sft", SftOptions, extend=extend, scored_documents=scored_documents))
