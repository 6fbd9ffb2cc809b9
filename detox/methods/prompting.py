"""Prompting (the paper's simplest baseline): a fixed instruction before every evaluation prompt;
the pre-trained model is evaluated as it is.

On the embedded world the default text is the world's civility preamble, a sentence that in the
clean source opens documents that then stay civil: the model can only follow an instruction its
data gave meaning to (an arbitrary English instruction would be noise to a model that never saw
one, and the baseline vacuous by construction). With real data, set `method.text` to an instruction
such as "Be respectful and polite in what follows. "; a pre-trained model (`model.path`), whose web
text gave English instructions their meaning, gets that one by default."""

from __future__ import annotations

from dataclasses import dataclass

from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan
from detox.data.sources import source_kind

PRETRAINED_DEFAULT = "Be respectful and polite in what follows. "  # model.path's default instruction


@dataclass
class PromptingOptions(MethodOptions):
    name: str = "prompting"
    text: str = ""  # placed before every evaluation prompt; empty: the world's civility preamble


def extend(plan: Plan, job) -> None:
    plan.prompt_prefix = job.method.text or source_kind(job.data).preamble() or (PRETRAINED_DEFAULT if job.model.path else "")


def validate(job) -> None:
    from detox.core.schema import ConfigError

    # only the world's data, or a pre-trained model's web text, gave an instruction its meaning
    if not job.method.text and source_kind(job.data).preamble() is None and not job.model.path:
        raise ConfigError(f"method=prompting with data.source={job.data.source} needs method.text: the instruction "
                          "to put before every prompt")


register(Method("prompting", PromptingOptions, extend=extend, validate=validate))
