"""Filtering the pre-training data by a toxicity score, the usual practice ("Deep Ignorance", O'Brien et
al. 2025, at document level): every document whose score (its corpus's own where it has one, else the
job's scorer's, a classifier's cached by text) reaches `method.threshold` is dropped from the mixture.
The clean token budget is kept (clean documents below the threshold fill it, as the paper keeps C);
the toxic documents the ratio selects are filtered after the selection, so the ratio says what the
data held before filtering. Logged: mix_dropped_toxic_docs / _tokens, filter_toxic_dropped_share,
filter_clean_dropped_share. Pre-trains its own base model (refused for a pre-trained `model.path`).
The transform is detox/data/filtering.py's `Filter`."""

from __future__ import annotations

from dataclasses import dataclass

from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan
from detox.core.schema import number
from detox.methods._mixture import replace_mixture


@dataclass
class FilterOptions(MethodOptions):
    name: str = "filter"
    threshold: float = number(0.5, "[0, 1]")  # a document scored at or above it is dropped


def extend(plan: Plan, job) -> None:
    from detox.data.filtering import Filter  # light: numpy, the packer's tag

    threshold = job.method.threshold
    replace_mixture(plan, job, "filter", {"threshold": threshold, "scorer": job.scorer.result_spec()},
                    lambda scorer: Filter(scorer, job.scorer.batch_size, threshold))


register(Method("filter", FilterOptions, extend=extend, pretrains=True,
                label=lambda job: f"score>={job.method.threshold:g}",
                params=lambda job: {"filter_threshold": f"{job.method.threshold:g}"}))
