"""The study's mixture stage replaced by one whose documents pass a transform on their way into the one
packer (detox.data.documents.Transform): MEDA's and INST's annotation, filter's drops, loss_mask's spans.
The streaming packer (never the prepared corpora's stores: the transformed text is tokenised as it is
packed) and the study mixture's version; the transform's spec enters the key under
`spec_name`. The transform is made when the stage runs, from the job's scorer for documents in bulk
(a classifier's scores cached by text under the job's root, detox.evaluation.scorers.bulk_scorer). A
module whose name starts with "_" registers nothing."""

from __future__ import annotations

from typing import Callable

from detox.core.artifacts import STAGE
from detox.core.plan import Plan, Stage


def replace_mixture(plan: Plan, job, spec_name: str, spec: dict, make: Callable, span_loss: dict | None = None,
                    after: Callable | None = None) -> None:
    """`make(scorer)`: the transform; `span_loss`: the packer's (method=loss_mask); `after(out, metrics)`:
    metrics of the packed folder to add."""
    mixture = plan[STAGE.MIXTURE]
    keyed = {name: value for name, value in mixture.spec.items() if name != "sample"}
    # transformed text is tokenised as it is packed: the streaming packer, never the prepared stores
    plan.replace(Stage(STAGE.MIXTURE, {**keyed, spec_name: spec},
                       lambda out, i: _build(job, make, span_loss, after, out, i), inputs=(STAGE.TOKENIZER,),
                       version=mixture.version))  # the study mixture's version
    plan.remove(STAGE.PREPARE)


def _build(job, make, span_loss, after, out, inputs) -> dict:
    from detox.data.stages import build_mixture
    from detox.evaluation import scorers

    scorer = scorers.bulk_scorer(job.scorer, job.root)
    metrics = build_mixture(job.data, job.ratio, job.seed, inputs[STAGE.SOURCES], inputs[STAGE.TOKENIZER], out,
                            transform=make(scorer), span_loss=span_loss)
    # the scorer's own counts (e.g. classifier_truncated), then the method's
    return {**metrics, **scorers.scorer_metrics(scorer), **(after(out) if after else {})}
