"""The paper's pre-training baselines MEDA and INST (after Prabhumoye et al. 2023): every pre-training
document is prefixed with an annotation of its toxicity: the job's scorer's score (the oracle on the
embedded world; a classifier's scores cached by text under the job's root, so every mixture scores its
clean documents once), asked in batches of scorer.batch_size. The /pol/ posts' own Perspective scores are
not used: one annotation reads one scorer's scale. Perspective itself is refused here (`validate`): it
would be sent every clean document of the mixture, some 4.7e7 for the paper's 20.1 B C4 tokens. The
model is pre-trained on that annotated mixture, and at evaluation the annotation of a non-toxic document
goes before every prompt. The templates are our
assumptions (the originals are not public); they are written down in detox/data/annotate.py. Annotation
is a transform of the documents on their way into the one packer (the mixture stage), so it applies to
every source kind, streamed corpora included, and scores only what the mixture reads.

The base model of these methods is its own: one pre-training per (scheme, ratio, seed), re-used by
every evaluation of it.

Shared by detox/methods/meda.py and inst.py, which register the two schemes (a module whose name starts
with "_" registers nothing: the registry's discovery skips it)."""

from __future__ import annotations

from detox.core.plan import Plan
from detox.core.schema import ConfigError
from detox.data.sources import source_kind
from detox.evaluation.config import PERSPECTIVE_CLOSES
from detox.methods._mixture import replace_mixture


def annotated_mixture(scheme: str):
    def extend(plan: Plan, job) -> None:
        from detox.data.annotate import Annotation, eval_prefix  # light: numpy and the templates

        # "version" 2: a /pol/ post's own Perspective score annotated it. No longer (one scorer's scale), with no bump:
        # that changed only corpora with a classifier, whose keys moved with its identity (Perspective is refused)
        annotate = {"scheme": scheme, "scorer": job.scorer.result_spec(), "version": 2}
        replace_mixture(plan, job, "annotate", annotate,  # each document annotated on its way into the packer
                        lambda scorer: Annotation(scorer, scheme, job.scorer.batch_size, job.scorer.threshold))
        plan.prompt_prefix = eval_prefix(scheme)

    return extend


def scored_documents(job) -> int:
    """About how many documents the annotation scores: the clean ones that fill the mixture's clean tokens
    (the toxic ones, fewer, come on top)."""
    return source_kind(job.data).documents_for(job.data.clean_tokens)


def validate(job) -> None:
    """Perspective never annotates in bulk: one line naming the requests and the hours it would take."""
    if job.scorer.name == "perspective":
        requests = scored_documents(job)
        raise ConfigError(f"scorer=perspective method={job.method.name} would send about {requests:,} documents to "
                          f"the Perspective API to annotate the mixture ({requests / job.scorer.qps / 3600:,.0f} h at "
                          f"{job.scorer.qps:g} QPS), and it closes on {PERSPECTIVE_CLOSES}: annotate with "
                          "scorer=classifier")
