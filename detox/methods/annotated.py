"""The paper's pre-training baselines MEDA and INST (after Prabhumoye et al. 2023): every pre-training
document is prefixed with an annotation of its toxicity, as scored by the job's scorer (the oracle on
the embedded world), the model is pre-trained on that annotated mixture, and at evaluation the
annotation of a non-toxic document goes before every prompt. The templates are our assumptions (the
originals are not public); they are written down in detox/annotate.py.

The base model of these methods is its own: one pre-training per (scheme, ratio, seed), re-used by
every evaluation of it."""

from __future__ import annotations

from dataclasses import asdict

from detox.methods import Method, MethodOptions, register
from detox.core.plan import Plan, Stage


def annotated_mixture(scheme: str):
    def extend(plan: Plan, job) -> None:
        from detox.data.annotate import eval_prefix  # light: numpy and the templates

        plan.add(Stage("annotate", {"scheme": scheme, "scorer": asdict(job.scorer)},
                       lambda out, i: _annotate(job, scheme, out, i), inputs=("sources",)), before="mixture")
        mixture = plan["mixture"]
        plan.replace(Stage("mixture", mixture.spec,
                           lambda out, i: _mixture(job, out, i), inputs=(*mixture.inputs, "annotate")))
        plan.prompt_prefix = eval_prefix(scheme)

    return extend


def _annotate(job, scheme: str, out, inputs) -> dict:
    """The sources with their training parts annotated (the other parts copied as they are)."""
    import json
    import shutil

    from detox import data
    from detox.evaluation import scorers
    from detox.data.annotate import annotate_documents

    scorer = scorers.make_scorer(job.scorer)
    counts = {}
    for source in sorted(inputs["sources"].glob("*.jsonl")):
        part = source.stem
        if part not in ("clean", "toxic"):
            shutil.copy(source, out / source.name)
            continue
        rows = list(annotate_documents(data.load_part(inputs["sources"], part), scorer, scheme, job.scorer.batch_size))
        (out / source.name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        counts[f"annotated_{part}_toxic_share"] = sum(r["toxicity"] >= job.scorer.threshold for r in rows) / len(rows)
    return counts


def _mixture(job, out, inputs) -> dict:
    from detox import data

    return data.build_mixture(job.data, job.ratio, job.seed, inputs["annotate"], inputs["tokenizer"], out)


for _scheme in ("meda", "inst"):
    register(Method(_scheme, MethodOptions, extend=annotated_mixture(_scheme)))
