"""INST (after Prabhumoye et al. 2023): every pre-training document is prefixed with an instruction saying
how toxic it is, and the non-toxic instruction goes before every evaluation prompt. The template is in
detox/data/annotate.py; the stages are detox/methods/_annotated.py's, shared with MEDA."""

from detox.core.methods import Method, register
from detox.methods._annotated import annotated_mixture, scored_documents, validate

register(Method("inst", extend=annotated_mixture("inst"), validate=validate, pretrains=True,
                scored_documents=scored_documents))
