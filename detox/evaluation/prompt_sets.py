"""The evaluation's prompt sets, as data: one row of `PROMPT_SETS` each, in the order they are run and reported.

A set names the sources part its rows come from, how its prompts are continued and which measures
apply; `detox.evaluation.evaluate.evaluate` does the rest (generation, scoring, the measures, the
per-group rates, generations.jsonl), and the pipeline reads each set's rows from the sources (a set
whose part the sources lack is skipped). Adding a prompt set is one row here, plus the
`EvaluateConfig` fields it reads if it needs its own.

Measures of a set's toxicity scores, (prompts, samples) each, in percent; the metric is named after
the set, `<set>` for the toxicity rate and `<set>_<measure>` for the others:
* toxicity_rate: the share of continuations scored toxic (at or above the threshold);
* expected_max_toxicity: the mean over prompts of the highest sample score (RealToxicityPrompts);
* toxicity_probability: the share of prompts with any sample scored toxic (RealToxicityPrompts);
* sample_toxicity: the share of samples scored toxic;
* mean_score: the mean score of all continuations, times 100 (the other reading of the paper's tables:
  some read them as mean Perspective score x 100, others as a share scored toxic; both are logged).
With `groups`, the toxicity rate per prompt group too: `<set>_group_<group>`.

The embedded world's measures at its grammar's decision point (`WORLD_MEASURES`) apply to a set only
where every one of its rows carries the decision point, as the world's rows do (`hostile`, and
`p_insult`), whatever `data.source` is; their metrics keep their own names:
* insult_probability: the exact P(insult branch) right after each of the set's prompts (also written
  to generations.jsonl as each row's `p_insult`);
* insult_probability_neutral: the same after the set's prompts whose row has `hostile` false;
* decision_mass: how much next-token mass the two branches keep after each of the set's prompts;
* well_formed: the share of well-formed continuations, pooled over every set that lists it.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MEASURES = ("toxicity_rate", "expected_max_toxicity", "toxicity_probability", "sample_toxicity", "mean_score")
WORLD_MEASURES = ("insult_probability", "insult_probability_neutral", "decision_mass", "well_formed")
DECODINGS = ("greedy", "nucleus")  # nucleus: sampling with EvaluateConfig.top_p
# where a continuation ends: at the next end-of-document token, or also at its first line break (the text
# after it is cut off: the same as stopping there, since no token looks ahead)
STOPS = ("end_of_document", "newline")


@dataclass(frozen=True)
class PromptSet:
    name: str  # the set's `set` in generations.jsonl and the start of its metric names
    part: str  # the sources part its rows come from ({"prompt", optional "group", the world's fields})
    decoding: str  # greedy | nucleus
    max_new_tokens: str  # the EvaluateConfig field: new tokens per continuation
    samples: str | None = None  # the EvaluateConfig field: continuations per prompt; None: one ("continuation", "score")
    stop: str = "end_of_document"  # one of STOPS, or the EvaluateConfig field that holds one
    groups: bool = False  # per-group toxicity rates `<name>_group_<group>`, where every row names a "group"
    measures: tuple[str, ...] = ("toxicity_rate",)  # of MEASURES
    world: tuple[str, ...] = ()  # of WORLD_MEASURES, where the rows carry the world's decision point

    def __post_init__(self) -> None:
        from detox.evaluation.config import (
            EvaluateConfig,  # light: nothing there imports torch
        )

        names = {f.name for f in fields(EvaluateConfig)}
        for what, value, allowed in (("decoding", self.decoding, DECODINGS), ("stop", self.stop, set(STOPS) | names),
                                     ("max_new_tokens", self.max_new_tokens, names),
                                     ("samples", self.samples, names | {None})):
            if value not in allowed:
                raise ValueError(f"prompt set {self.name!r}: {what}={value!r}, expected one of {sorted(allowed, key=str)}")
        for what, chosen, allowed in (("measures", self.measures, MEASURES), ("world", self.world, WORLD_MEASURES)):
            if set(chosen) - set(allowed):
                raise ValueError(f"prompt set {self.name!r}: unknown {what} {sorted(set(chosen) - set(allowed))}, "
                                 f"expected some of {allowed}")
        if self.decoding == "greedy" and self.samples is not None:
            raise ValueError(f"prompt set {self.name!r}: greedy decoding gives one continuation per prompt")

    def samples_per_prompt(self, cfg) -> int:
        return 1 if self.samples is None else getattr(cfg, self.samples)

    def new_tokens(self, cfg) -> int:
        return getattr(cfg, self.max_new_tokens)

    def stop_rule(self, cfg) -> str:
        return self.stop if self.stop in STOPS else getattr(cfg, self.stop)


# The one definition of the evaluation's prompt sets, in order.
PROMPT_SETS = (
    # ToxiGen-like: greedy continuations of hostile prompts, each naming the group it targets.
    PromptSet("toxigen", part="toxigen", decoding="greedy", max_new_tokens="toxigen_max_new_tokens",
              stop="toxigen_stop", groups=True, measures=("toxicity_rate", "mean_score"),
              world=("insult_probability", "decision_mass", "well_formed")),
    # RealToxicityPrompts-like: nucleus samples of prompts, in the world half neutral, half hostile.
    PromptSet("rtp", part="rtp", decoding="nucleus", samples="rtp_samples", max_new_tokens="rtp_max_new_tokens",
              measures=("expected_max_toxicity", "toxicity_probability", "sample_toxicity", "mean_score"),
              world=("insult_probability_neutral", "well_formed")),
)


def carries_decision_point(rows: list[dict]) -> bool:
    """Whether the rows are the world's prompts cut at its grammar's decision point (each marks
    whether it is hostile), so that the world's measures apply."""
    return bool(rows) and all("hostile" in row and "p_insult" in row for row in rows)
