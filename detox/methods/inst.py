"""INST (after Prabhumoye et al. 2023): every pre-training document is prefixed with an instruction saying
how toxic it is, and the non-toxic instruction goes before every evaluation prompt. The template is in
detox/data/annotate.py; the stages are detox/methods/_annotated.py's, shared with MEDA."""

from detox.core.methods import Method, register
from detox.methods._annotated import annotated_mixture

register(Method("inst", extend=annotated_mixture("inst"), pretrains=True))
