"""The study's own negative control: the seeds of one ratio split into two halves, compared as the
report compares two ratios. No difference exists between the halves, so every difference the tests call
is a false positive.

    python benchmarks/negative_control.py --experiment detox-cpu-study [--ratio 0] [--tracking-uri URI]

For each way to split the ratio's seeds into two halves (126 for 10 seeds), the second half is relabelled
as another ratio and the report's power table (`detox.report.frontier.power_table`: every claim's family of
tests, Holm-corrected, seeds the unit) compares it with the first, from the same runs and curves the report
reads. It prints, per claim, the share of splits in which the family calls a difference after Holm's
correction and in which any test alone would. The splits share seeds, so they are not independent
studies: this is the false-positive rate on the study's own data (its spreads, its correlated measures),
beside the simulation of independent studies in tests/report/test_frontier.py.
"""

import argparse
import sys
from itertools import combinations
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.core.contract import RATIO, SEED, param  # noqa: E402
from detox.core.tradeoff import DEFAULT_CE_BUDGET, DEFAULT_MIN_WELL_FORMED  # noqa: E402
from detox.report.frontier import CONFIDENCE, load_curves, power_table  # noqa: E402
from detox.report.runs import load_runs, ratio_label  # noqa: E402


def false_positives(runs: pd.DataFrame, curves: pd.DataFrame, ratio: float, n_boot: int = 20) -> pd.DataFrame:
    """Per claim: splits tested, and the share of them in which a difference is called (Holm; uncorrected)."""
    runs = runs[runs[param(RATIO)].astype(float).eq(ratio)]
    curves = curves[curves["ratio"].eq(ratio)] if not curves.empty else curves
    seeds = sorted(runs[param(SEED)].unique(), key=int)
    if len(seeds) < 4:
        raise SystemExit(f"ratio {ratio_label(ratio)}: {len(seeds)} seeds; a split needs at least 2 a half")
    other = ratio + 0.5  # the second half's label: a ratio the runs at hand do not have
    called: dict[str, list[tuple[bool, bool]]] = {}
    halves = [set(h) for h in combinations(seeds, len(seeds) // 2) if seeds[0] in h]  # each split once
    for first in halves:
        moved = ~runs[param(SEED)].isin(first)
        relabelled = runs.assign(**{param(RATIO): runs[param(RATIO)].where(~moved, str(other))})
        relabelled_curves = curves.assign(ratio=curves["ratio"].where(curves["seed"].isin(first), other))
        table = power_table(relabelled, relabelled_curves, ratio, DEFAULT_CE_BUDGET, DEFAULT_MIN_WELL_FORMED, n_boot)
        for claim, family in table.groupby("claim", sort=False):
            holm = pd.to_numeric(family["p (Holm)"], errors="coerce")
            raw = pd.to_numeric(family["p"], errors="coerce")
            called.setdefault(claim, []).append((bool((holm < 1 - CONFIDENCE).any()), bool((raw < 1 - CONFIDENCE).any())))
    return pd.DataFrame([{"claim": claim, "splits": len(calls),
                          "called after Holm %": 100 * sum(h for h, _ in calls) / len(calls),
                          "called uncorrected %": 100 * sum(r for _, r in calls) / len(calls)}
                         for claim, calls in called.items()])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    parser.add_argument("--experiment", default="detox-cpu-study")
    parser.add_argument("--ratio", type=float, default=0.0, help="the ratio whose seeds are split")
    args = parser.parse_args(argv)
    runs = load_runs(args.tracking_uri, args.experiment)
    if runs.empty:
        raise SystemExit(f"no finished runs in experiment {args.experiment!r} at {args.tracking_uri}")
    curves = load_curves(MlflowClient(args.tracking_uri), runs)
    table = false_positives(runs, curves, args.ratio)
    n = runs.loc[runs[param(RATIO)].astype(float).eq(args.ratio), param(SEED)].nunique()
    print(f"negative control: experiment {args.experiment}, the {n} seeds of ratio {ratio_label(args.ratio)} "
          f"split into halves every way ({table['splits'].iloc[0]} splits), each compared as two ratios")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main(sys.argv[1:])
