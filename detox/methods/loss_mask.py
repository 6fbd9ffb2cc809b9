"""Keeping toxic text in context without learning to produce it (SLUNG, Wang et al. 2025): every sentence
whose score reaches `method.threshold` (the job's scorer at sentence level, a classifier's cached by
text; on the embedded world with the oracle: exactly the insult sentence) is a span whose tokens stay
in the pre-training windows but carry no loss weight; with `method.unlikelihood` > 0 they carry that
weight times the unlikelihood loss -log(1 - p(token)) instead (Welleck et al. 2020), pushing their
probability down. The spans are marked in mask shards beside the packed tokens (detox/data/filtering.py
`SpanMask`, detox/data/packing.py), and the pre-training loss reads them (detox/training/loss.py).
Logged: masked_<part>_doc_share, mix_masked_tokens. Pre-trains its own base model (refused for a
pre-trained `model.path`); the weighted loss runs chunked too (`trainer.loss_chunk`)."""

from __future__ import annotations

from dataclasses import dataclass

from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan
from detox.core.schema import number
from detox.methods._mixture import replace_mixture


@dataclass
class LossMaskOptions(MethodOptions):
    name: str = "loss_mask"
    threshold: float = number(0.5, "[0, 1]")  # a sentence scored at or above it is masked
    unlikelihood: float = number(0.0, "[0, inf)")  # weight of the unlikelihood loss on the masked tokens (0: none)


def extend(plan: Plan, job) -> None:
    from detox.data.filtering import SpanMask  # light: numpy, the packer's tag

    m = job.method
    replace_mixture(plan, job, "loss_mask", {"threshold": m.threshold, "scorer": job.scorer.result_spec(),
                                             "unlikelihood": m.unlikelihood},
                    lambda scorer: SpanMask(scorer, job.scorer.batch_size, m.threshold),
                    span_loss={"unlikelihood": m.unlikelihood}, after=_masked_tokens)


def _masked_tokens(out) -> dict:
    from detox.core.shards import open_mixture

    tokens = open_mixture(out)
    return {"mix_masked_tokens": int(sum(int(m.sum(dtype="int64")) for m in tokens.masks))}


def label(job) -> str:
    m = job.method
    return f"score>={m.threshold:g}" + (f" unlikelihood={m.unlikelihood:g}" if m.unlikelihood else "")


register(Method("loss_mask", LossMaskOptions, extend=extend, label=label, pretrains=True,
                params=lambda job: {"loss_mask_threshold": f"{job.method.threshold:g}",
                                    "loss_mask_unlikelihood": f"{job.method.unlikelihood:g}"}))
