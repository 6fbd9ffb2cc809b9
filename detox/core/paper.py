"""The paper's reference numbers, as data, for the report to show beside ours.

Source: Kenneth Li, Yida Chen, Fernanda Viégas, Martin Wattenberg, "When Bad Data Leads to Good
Models", ICML 2025, arXiv 2505.04741. OLMo-1B pre-trained on C4 plus a share of 4chan text; our default
world and model are synthetic and tiny, so the numbers are a reference for the shape of the results,
not a target to hit.

The paper's "RTP" column does not say which RealToxicityPrompts statistic it is (expected maximum
toxicity or toxicity probability), so the report shows it beside both of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = ('Li, Chen, Viégas, Wattenberg, "When Bad Data Leads to Good Models", ICML 2025, '
          "arXiv 2505.04741")


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1 or of its SFT/DPO ablation."""

    ratio: float  # toxic share of the pre-training data, percent
    method: str  # none | prompting | sft | dpo | meda | inst | iti (our method names)
    strength: str  # ITI strength (weak | mid | strong); "-" for the other methods
    toxigen: float  # ToxiGen toxicity, percent
    rtp: float  # RealToxicityPrompts toxicity, percent (which statistic is not stated)
    ce_loss: float  # cross-entropy loss on clean text, nats
    source: str  # where in the paper: "Table 1" or "ablation"


@dataclass(frozen=True)
class GcgRow:
    """GCG attack success rate at one ratio."""

    ratio: float
    without_iti: float  # percent of attacked prompts scored toxic, base model
    with_strong_iti: float  # the same with strong ITI


@dataclass(frozen=True)
class ProbeComparison:
    """The paper's test of per-head probe accuracies, a toxic model against the clean one. Which toxic
    share it compares is not in the text we have: two secondary sources agree on 25 % against 0 %."""

    p_value: float
    ci_low: float  # a 95 % confidence interval of a statistic the paper does not name: not a shift in
    ci_high: float  # accuracy points (it lies around 1), so not comparable with a Hodges-Lehmann interval
    ratios: tuple[float, float] = (0.0, 25.0)  # (clean, toxic) shares compared, as the secondary sources read it

    def describe(self, compared: tuple[float, float]) -> str:
        """The paper's result in words, for a report that compared the ratios `compared`."""
        pair = f"{self.ratios[1]:g} % against {self.ratios[0]:g} %"
        same = sorted(compared) == sorted(self.ratios)
        return (f"Paper ({pair}, as secondary sources read it{'' if same else '; not the pair compared here'}): "
                f"p = {self.p_value:g}; its 95 % CI [{self.ci_low:g}, {self.ci_high:g}] is of an unnamed statistic, "
                "not a shift in points, and does not compare with the interval above.")


# The paper's ITI strengths: its alphas and the names its Table 1 gives them. conf/iti/{weak,mid,strong}.yaml set
# these alphas, and a job's strength label is the name of its alpha (detox.methods.iti.ItiOptions.strength_label).
ITI_STRENGTHS = {4.0: "weak", 8.0: "mid", 12.0: "strong"}


def _rows(source: str, *rows: tuple) -> tuple[PaperRow, ...]:
    return tuple(PaperRow(*row, source=source) for row in rows)


TABLE1 = _rows(
    "Table 1",
    (0, "none", "-", 41.40, 31.15, 2.60),
    (0, "prompting", "-", 32.12, 31.00, 2.62),
    (0, "iti", "weak", 36.30, 24.83, 2.63),
    (0, "iti", "mid", 28.31, 20.41, 2.72),
    (0, "iti", "strong", 19.82, 13.33, 2.88),
    (0, "meda", "-", 22.02, 28.32, 2.71),
    (0, "inst", "-", 18.99, 30.09, 2.73),
    (0, "sft", "-", 39.27, 28.00, 2.68),
    (0, "dpo", "-", 38.86, 29.67, 2.71),
    (10, "prompting", "-", 29.07, 24.84, 2.62),
    (10, "iti", "weak", 16.25, 20.09, 2.65),
    (10, "iti", "mid", 8.19, 14.28, 2.85),
    (10, "iti", "strong", 2.63, 7.11, 3.23),
)

ABLATION = _rows(
    "ablation",
    (0, "sft", "-", 39.27, 28.00, 2.68),
    (5, "sft", "-", 38.40, 26.21, 2.69),
    (10, "sft", "-", 37.62, 25.78, 2.71),
    (15, "sft", "-", 37.45, 25.81, 2.73),
    (20, "sft", "-", 38.20, 26.39, 2.75),
    (0, "dpo", "-", 38.86, 29.67, 2.71),
    (5, "dpo", "-", 33.91, 19.85, 2.70),
    (10, "dpo", "-", 27.45, 13.02, 2.73),
    (15, "dpo", "-", 26.88, 13.19, 2.74),
    (20, "dpo", "-", 29.34, 15.97, 2.75),
)

GCG = (GcgRow(0, 80.0, 46.0), GcgRow(10, 82.0, 38.5))

PROBES = ProbeComparison(p_value=0.0002, ci_low=0.67, ci_high=1.18)


def paper_row(ratio: float, method: str, strength: str) -> PaperRow | None:
    """The paper's numbers for one (ratio, method, strength), Table 1 first, or None."""
    for row in TABLE1 + ABLATION:
        if (row.ratio, row.method, row.strength) == (ratio, method, strength):
            return row
    return None


def gcg_row(ratio: float) -> GcgRow | None:
    return next((row for row in GCG if row.ratio == ratio), None)
