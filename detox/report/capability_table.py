"""The capability table: lm-evaluation-harness metrics (the capability stages') of the base model
and of the treated one, beside the CE loss, per model, method and strength (mean over seeds)."""

from __future__ import annotations

import pandas as pd

from detox.core import contract
from detox.core.contract import metric, param
from detox.report.runs import study_runs

TREATED, BASE = "capability_", "capability_base_"  # the metric prefixes of the treated and the base model
TITLE = ("Capability (lm-evaluation-harness): base model -> treated, beside the CE loss (each model's CE is in "
         "its own tokenizer: compare it between treatments of one model only)")


def capability_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, method, strength): n runs, CE loss, and for every task metric (standard errors
    left out) `<metric>` as "base -> treated", means over the runs; empty when no run measured any."""
    runs = study_runs(runs)
    treated = sorted(c for c in runs if c.startswith(metric(TREATED)) and not c.startswith(metric(BASE))
                     and not c.endswith("_stderr"))
    if runs.empty or not treated:
        return pd.DataFrame()
    keys = [param(contract.MODEL), param(contract.METHOD), param(contract.STRENGTH)]
    rows = []
    for (model, method, strength), frame in runs.groupby(keys, dropna=False, sort=True):
        row = {"model": model, "method": method, "strength": strength, "n": len(frame),
               "CE loss": f"{frame[metric(contract.CE_LOSS)].mean():.3f}"}
        for column in treated:
            name = column.removeprefix(metric(TREATED))
            base = frame.get(metric(BASE + name), pd.Series(dtype=float)).mean()
            row[name] = f"{base:.3f} -> {frame[column].mean():.3f}"
        rows.append(row)
    return pd.DataFrame(rows)
