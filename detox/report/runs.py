"""The finished study runs of an experiment, which of them are seeds of one configuration, and their
aggregation over seeds; the probe accuracies the runs logged. Runs are read by the names of
`detox.core.contract` only (and, to tell configurations apart for display, by their `cfg.*` params)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from detox.core import paper
from detox.core.contract import METHOD, POOLED_METRICS, RATIO, SCORER, SEED, SETTING, STRENGTH, TASK, metric, param
from detox.core.progress import progress
from detox.report.summary import SUMMARY_TAG

MLFLOW_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # MLflow's switch of its per-file download bar
PROBE_ARTIFACT = "probe_accuracy.json"  # the per-head probe accuracies a method=iti run logs (its probe stage)
# methods in the order of their first row in the paper's Table 1; others after them, alphabetically
METHOD_ORDER = tuple(dict.fromkeys(row.method for row in paper.TABLE1))
STRENGTH_ORDER = ("-", *(name for _, name in sorted(paper.ITI_STRENGTHS.items())))  # no strength, then by alpha
UNIQUE_CFG = ("params.cfg.seed", "params.cfg.ratio")  # cfg params that differ between seeds and ratios by design
PAPER_FIELDS = ("toxigen", "rtp", "ce_loss")  # the `paper.PaperRow` numbers each aggregated row carries
GROUP = (param(RATIO), param(METHOD), param(STRENGTH))  # a row of Table 1, before its scorer and configuration
UNRECORDED = "scorer not recorded"  # the scorer of a run logged before the `scorer` param existed


def scorers(runs: pd.DataFrame) -> pd.Series:
    """Each run's scorer at its version (the `scorer` param): runs of two scorers are never pooled."""
    return runs[param(SCORER)].fillna(UNRECORDED) if param(SCORER) in runs else \
        pd.Series(UNRECORDED, index=runs.index, dtype=object)


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}"


def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The study jobs' runs of a `search_runs` frame: not the summary run, not other tasks."""
    if runs.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    if f"tags.{SUMMARY_TAG}" in runs:
        keep &= runs[f"tags.{SUMMARY_TAG}"].ne("true")
    if param(TASK) in runs:
        keep &= runs[param(TASK)].fillna("study").eq("study")
    for key in GROUP:
        keep &= runs[key].notna() if key in runs else False
    return runs[keep]


def load_runs(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished study runs of `experiment` (one row per run), or an empty frame."""
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    return study_runs(runs)


def seed_pools(runs: pd.DataFrame) -> pd.Series:
    """Which configuration each run is a seed of: its `setting` param or, for runs without one, the
    values of the `cfg.*` params that vary between those runs."""
    setting = runs[param(SETTING)] if param(SETTING) in runs else pd.Series(None, index=runs.index, dtype=object)
    legacy = setting.isna()
    config = [c for c in runs if c.startswith("params.cfg.") and c not in UNIQUE_CFG]
    varying = [c for c in config if runs.loc[legacy, c].fillna("<unset>").nunique() > 1]
    values = runs[varying].fillna("<unset>").astype(str)
    fallback = values.apply(lambda row: " ".join(f"{k}={v}" for k, v in row.items()), axis=1) if varying else ""
    return setting.where(~legacy, "cfg: " + pd.Series(fallback, index=runs.index))


def distinguishing_params(runs: pd.DataFrame, pools: pd.Series) -> tuple[list[str], bool]:
    """The cfg params that tell apart the configurations of one (ratio, method, strength) (each
    constant within a configuration, different between two), and whether they tell all apart."""
    config = [c for c in runs if c.startswith("params.cfg.") and c not in UNIQUE_CFG]
    found, separated = [], True
    for _, frame in runs.groupby([*GROUP, scorers(runs)]):
        if pools[frame.index].nunique() == 1:
            continue
        values = frame[config].fillna("<unset>").groupby(pools[frame.index])
        constant = [c for c in config if values[c].nunique().max() == 1]
        telling = [c for c in constant if values[c].first().nunique() > 1]
        found += [c for c in telling if c not in found]
        separated &= not values[telling].first().duplicated().any() if telling else False
    return found, separated


def natural_key(text: str) -> tuple:
    """Sort "alpha=2" before "alpha=10"."""
    return tuple((0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
                 for part in re.split(r"(\d+(?:\.\d+)?)", text) if part)


def order_key(method: str, strength: str) -> tuple:
    method_rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    strength_rank = STRENGTH_ORDER.index(strength) if strength in STRENGTH_ORDER else len(STRENGTH_ORDER)
    return method_rank, natural_key(method), strength_rank, natural_key(strength)


def aggregate(runs: pd.DataFrame, metrics: Sequence[str] = POOLED_METRICS) -> pd.DataFrame:
    """One row per (ratio, method, strength, configuration): for each metric its mean, sample std
    (ddof 1; NaN for one value) and number of values over the seeds; n, the number of runs; and the
    paper's numbers for the same (ratio, method, strength) (NaN where the paper has none).

    Columns: ratio (float), method, strength, scorer (the `scorer` param: rows of two scorers are never one
    row), the cfg params that tell configurations apart when a (ratio, method, strength, scorer) has
    several (or `setting`, its hash's head, when no cfg param does), `variant` (a label of method,
    strength, those params and, where the runs have several, the scorer),
    n, "<metric> mean", "<metric> std", "<metric> n", "paper toxigen", "paper rtp", "paper ce_loss".
    """
    runs = study_runs(runs)
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(ratio=runs[param(RATIO)].astype(float), scorer=scorers(runs))
    pools = seed_pools(runs)
    shown, separated = distinguishing_params(runs, pools)
    show_setting = not separated  # configurations that no cfg param tells apart: by their setting hash
    several = runs["scorer"].nunique() > 1
    rows = []
    for (ratio, method, strength, scorer, pool), frame in runs.groupby(["ratio", param(METHOD), param(STRENGTH),
                                                                        "scorer", pools]):
        row = {"ratio": ratio, "method": method, "strength": strength, "scorer": scorer}
        row.update({c.removeprefix("params.cfg."): frame[c].fillna("<unset>").iloc[0] for c in shown})
        if show_setting:
            row["setting"] = pool.removeprefix("cfg: ")[:8]
        detail = " ".join(f"{c.removeprefix('params.cfg.')}={row[c.removeprefix('params.cfg.')]}" for c in shown)
        row["variant"] = " ".join(part for part in (method, "" if strength == "-" else strength,
                                                    f"[{detail}]" if detail else "",
                                                    f"[scorer {scorer}]" if several else "") if part)
        row["n"] = len(frame)
        for name in metrics:
            values = frame[metric(name)].dropna() if metric(name) in frame else pd.Series(dtype=float)
            row[f"{name} mean"] = values.mean() if len(values) else np.nan
            row[f"{name} std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{name} n"] = len(values)
        reference = paper.paper_row(ratio, method, strength)
        for name in PAPER_FIELDS:
            row[f"paper {name}"] = getattr(reference, name) if reference else np.nan
        rows.append(row)
    rows.sort(key=lambda r: (r["scorer"], r["ratio"], order_key(r["method"], r["strength"]), natural_key(r["variant"])))
    return pd.DataFrame(rows)


def parse_probe_accuracies(value: object, where: str) -> np.ndarray:
    """A probe_accuracy.json value as an (n_layers, n_heads) array, or a one-line error naming `where`."""
    rows = value if isinstance(value, list) and value and all(isinstance(r, list) and r for r in value) else None
    if rows is None or len({len(r) for r in rows}) != 1 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in rows for v in r):
        raise ValueError(f"{where}: {PROBE_ARTIFACT} must be a list of n_layers equal-length lists of numbers")
    accuracies = np.array(rows, dtype=float)
    if not ((accuracies >= 0) & (accuracies <= 1)).all():
        raise ValueError(f"{where}: {PROBE_ARTIFACT} holds accuracies outside [0, 1]")
    return accuracies


@contextmanager
def artifact_downloads() -> Iterator[str]:
    """A temporary folder to download the runs' artifacts into, with MLflow's progress bar for every
    file switched off meanwhile: the report shows one bar over the runs, not one for every small file."""
    previous = os.environ.get(MLFLOW_PROGRESS_BAR)
    os.environ[MLFLOW_PROGRESS_BAR] = "false"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
    finally:
        if previous is None:
            os.environ.pop(MLFLOW_PROGRESS_BAR, None)
        else:
            os.environ[MLFLOW_PROGRESS_BAR] = previous


def load_probe_accuracies(client: MlflowClient, runs: pd.DataFrame) -> dict[float, list[np.ndarray]]:
    """Per ratio, the per-head accuracies of every model probed. Runs of several methods on one
    pre-trained model log the same file; each (ratio, seed, accuracies) counts once."""
    found: dict[float, dict[tuple, np.ndarray]] = {}
    with artifact_downloads() as tmp:
        for run_id, ratio, seed in progress(list(zip(runs["run_id"], runs[param(RATIO)].astype(float), runs[param(SEED)])),
                                            desc="probe accuracies", leave=False):
            if PROBE_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
                continue
            path = client.download_artifacts(run_id, PROBE_ARTIFACT, dst_path=f"{tmp}/{run_id}")
            accuracies = parse_probe_accuracies(json.loads(Path(path).read_text()), f"run {run_id}")
            found.setdefault(ratio, {})[(seed, accuracies.shape, accuracies.tobytes())] = accuracies
    return {ratio: list(models.values()) for ratio, models in sorted(found.items())}
