"""The paper's pre-training baselines MEDA and INST (after Prabhumoye et al. 2023): every pre-training
document is prefixed with an annotation of its toxicity: the score its corpus gives it where it has one
(the /pol/ posts' Perspective TOXICITY), else the job's scorer's (the oracle on the embedded world; a
classifier's scores cached by text under the job's root, so every mixture scores its clean documents
once), asked in batches of scorer.batch_size. The model is pre-trained on that annotated mixture, and at
evaluation the annotation of a non-toxic document goes before every prompt. The templates are our
assumptions (the originals are not public); they are written down in detox/data/annotate.py. Annotation
is a transform of the documents on their way into the one packer (the mixture stage), so it applies to
every source kind, streamed corpora included, and scores only what the mixture reads.

The base model of these methods is its own: one pre-training per (scheme, ratio, seed), re-used by
every evaluation of it.

Shared by detox/methods/meda.py and inst.py, which register the two schemes (a module whose name starts
with "_" registers nothing: the registry's discovery skips it)."""

from __future__ import annotations

from detox.core.plan import Plan
from detox.methods._mixture import replace_mixture


def annotated_mixture(scheme: str):
    def extend(plan: Plan, job) -> None:
        from detox.data.annotate import Annotation, eval_prefix  # light: numpy and the templates

        # "version" 2: a document's own score (the /pol/ posts' Perspective TOXICITY) annotates it where it has one
        annotate = {"scheme": scheme, "scorer": job.scorer.result_spec(), "version": 2}
        replace_mixture(plan, job, "annotate", annotate,  # each document annotated on its way into the packer
                        lambda scorer: Annotation(scorer, scheme, job.scorer.batch_size, job.scorer.threshold))
        plan.prompt_prefix = eval_prefix(scheme)

    return extend
