"""MEDA (after Prabhumoye et al. 2023): every pre-training document is prefixed with its toxicity score as
metadata, and the annotation of a non-toxic document goes before every evaluation prompt. The template
is in detox/data/annotate.py; the stages are detox/methods/_annotated.py's, shared with INST."""

from detox.core.methods import Method, register
from detox.methods._annotated import annotated_mixture, scored_documents, validate

register(Method("meda", extend=annotated_mixture("meda"), validate=validate, pretrains=True,
                scored_documents=scored_documents))
