import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from detox.callbacks import ReportOnMultirunEnd
from detox.core import paper
from detox.core.schema import ConfigError
from detox.report import ReportConfig, build_report, main, table_main
from detox.report.runs import (MLFLOW_PROGRESS_BAR, aggregate, artifact_downloads, load_probe_accuracies,
                               parse_probe_accuracies)
from detox.report.stats import compare_probe_accuracies
from detox.report.summary import SUMMARY_TAG
from detox.report.tables import comparison_table


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"params.ratio": ["0"] * n, "params.seed": [str(i) for i in range(n)], "params.method": ["none"] * n,
            "params.strength": ["-"] * n}
    return pd.DataFrame({**base, **{k.replace("__", "."): v for k, v in columns.items()}})


def test_aggregate_gives_mean_sample_std_and_n_per_metric():
    runs = frame(params__ratio=["0", "0", "10", "10", "10"], metrics__toxigen=[40.0, 44.0, 10.0, 20.0, 30.0],
                 metrics__ce_loss=[2.0, 2.2, 2.5, np.nan, np.nan])
    agg = aggregate(runs, ["toxigen", "ce_loss", "missing"])
    assert list(agg["ratio"]) == [0.0, 10.0] and list(agg["n"]) == [2, 3]
    assert agg["toxigen mean"].tolist() == pytest.approx([42.0, 20.0])
    assert agg["toxigen std"].tolist() == pytest.approx([statistics.stdev([40, 44]), statistics.stdev([10, 20, 30])])
    assert list(agg["ce_loss n"]) == [2, 1] and np.isnan(agg["ce_loss std"][1])  # one value: no std
    assert list(agg["missing n"]) == [0, 0]
    table = comparison_table(runs)
    assert list(table["ToxiGen %"]) == ["42.00 ± 2.83", "20.00 ± 10.00"]
    assert list(table["CE loss"]) == ["2.10 ± 0.14", "2.50 (n=1)"]  # fewer values than the row's runs
    assert list(table["RTP prob %"]) == ["-", "-"]  # Table 1's own columns stay, empty
    assert "insult prob %" not in table  # optional columns only when logged
    assert list(table["paper ToxiGen (Perspective, as % toxic)"]) == ["41.40", ""]  # the paper has ratio 0 none, not ratio 10 none


def test_rows_sort_by_ratio_then_the_papers_method_order_then_strength():
    strengths = ["random", "strong", "alpha=10", "weak", "alpha=2", "mid"]
    runs = frame(params__ratio=["25", "5", "10", "5", "5"] + ["5"] * 6,
                 params__method=["none", "none", "none", "dpo", "prompting"] + ["iti"] * 6,
                 params__strength=["-"] * 5 + strengths, metrics__toxigen=list(range(11)))
    agg = aggregate(runs)
    assert [f"{r:g}" for r in agg["ratio"]] == ["5"] * 9 + ["10", "25"]
    assert list(agg["variant"]) == ["none", "prompting", "iti weak", "iti mid", "iti strong", "iti alpha=2",
                                    "iti alpha=10", "iti random", "dpo", "none", "none"]


def test_runs_of_different_configs_are_never_pooled():
    runs = frame(params__seed=["1", "2", "1", "2"], params__cfg__model__n_layers=["4", "4", "6", "6"],
                 params__cfg__seed=["1", "2", "1", "2"], metrics__toxigen=[1.0, 3.0, 10.0, 30.0])
    table = comparison_table(runs)
    assert list(table["model.n_layers"]) == ["4", "6"]
    assert list(table["ToxiGen %"]) == ["2.00 ± 1.41", "20.00 ± 14.14"]
    assert list(table["n"]) == [2, 2]


def test_the_setting_param_decides_what_is_pooled():
    # equal setting: seeds of one configuration, even where a cfg param (thread count) differs;
    # a different setting is never pooled, though no cfg param tells it apart
    runs = frame(params__setting=["a1", "a1", "b2", "b2"], params__cfg__trainer__num_threads=["1", "2", "1", "1"],
                 metrics__toxigen=[1.0, 3.0, 10.0, 30.0])
    agg = aggregate(runs, ["toxigen"])
    assert list(agg["setting"]) == ["a1", "b2"] and list(agg["n"]) == [2, 2]
    assert agg["toxigen mean"].tolist() == pytest.approx([2.0, 20.0])
    assert list(agg["variant"]) == ["none", "none"]  # the setting hash holds the ratio: no label across ratios
    # one setting a (ratio, method, strength): no setting column
    assert "setting" not in aggregate(runs[runs["params.setting"].eq("a1")], ["toxigen"])


def test_compare_probe_accuracies_against_exact_enumeration():
    first, second = np.array([0.50, 0.55, 0.61]), np.array([0.58, 0.70, 0.72, 0.80])
    # models of one head each: a model's 90th-percentile head is that head
    test = compare_probe_accuracies(first[:, None, None], second[:, None, None], n_boot=500)
    # Hodges-Lehmann: the median of all 12 pairwise differences
    assert test.shift == pytest.approx(statistics.median(b - a for a in first for b in second))
    # exact two-sided Mann-Whitney p: all 35 ways to split the 7 values into groups of 3 and 4
    pooled = np.concatenate([first, second])

    def u_statistic(group):
        return sum(b > a for a in pooled[[i for i in range(7) if i not in group]] for b in pooled[list(group)])

    observed = u_statistic(range(3, 7))
    splits = [u_statistic(group) for group in itertools.combinations(range(7), 4)]
    extreme = sum(abs(u - 6) >= abs(observed - 6) for u in splits)  # 6 = 3 * 4 / 2, the mean of U
    assert test.p_value == pytest.approx(extreme / len(splits))
    assert test.ci_low <= test.shift <= test.ci_high
    shifted = compare_probe_accuracies(first[:, None, None], first[:, None, None] + 0.1, n_boot=200)
    assert shifted.shift == pytest.approx(0.1) and shifted.ci_low > 0


def test_the_probe_test_counts_models_not_heads():
    rng = np.random.default_rng(0)
    first, second = rng.uniform(0.6, 0.7, (3, 4, 4)), rng.uniform(0.6, 0.7, (3, 4, 4))  # 3 models of 16 heads
    test = compare_probe_accuracies(first, second, n_boot=100)
    tails = [np.quantile(s.reshape(3, -1), 0.9, axis=1) for s in (first, second)]
    assert test.shift == pytest.approx(np.median(tails[1][:, None] - tails[0][None, :]))
    assert test.p_value >= 0.1  # 3 against 3 can reach p = 0.1 at best: the heads add no sample size


def test_the_report_loads_neither_torch_nor_a_stage_a_method_or_the_job_config():
    """The report reads MLflow through detox.core alone: it starts without the torch stack."""
    code = ("import sys, detox.report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or "
            "m.startswith(('detox.methods', 'detox.steering', 'detox.training', 'detox.evaluation', 'detox.job'))))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize("before", [None, "true"])
def test_artifact_downloads_silence_mlflows_bar_and_restore_the_variable(monkeypatch, before):
    monkeypatch.delenv(MLFLOW_PROGRESS_BAR, raising=False)
    if before is not None:
        monkeypatch.setenv(MLFLOW_PROGRESS_BAR, before)
    with artifact_downloads() as folder:
        assert os.environ[MLFLOW_PROGRESS_BAR] == "false" and os.path.isdir(folder)
    assert os.environ.get(MLFLOW_PROGRESS_BAR) == before and not os.path.exists(folder)


@pytest.mark.parametrize("value, message", [
    ({"layer": [0.5]}, "must be a list of n_layers equal-length lists"),
    ([[0.5, 0.6], [0.7]], "must be a list of n_layers equal-length lists"),
    ([[0.5, "x"]], "must be a list of n_layers equal-length lists"),
    ([[0.5, 1.2]], "outside [0, 1]"),
])
def test_bad_probe_accuracies_are_named(value, message):
    with pytest.raises(ValueError, match=r"^run abc: probe_accuracy\.json .*" + message.replace("[", r"\[")):
        parse_probe_accuracies(value, "run abc")


# ---------------------------------------------------------------- a real MLflow store

EXPERIMENT = "study"


def toxigen_of(ratio, method, seed):
    return 40.0 - ratio - (25.0 if method == "iti" else 0.0) + 1.5 * seed ** 2


def probe_of(ratio, seed):
    return np.random.default_rng(seed).uniform(0.5, 0.7, (2, 3)) + (0.15 if ratio else 0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store of known runs; `logged` keeps what each finished study run logged."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    logged = []

    def log(ratio, seed, method, strength="-", setting="main", status="FINISHED", probe=False, **extra):
        metrics = {"toxigen": toxigen_of(ratio, method, seed), "rtp_toxicity_probability": 30.0 - seed,
                   "rtp_expected_max_toxicity": 20.0 + seed, "ce_loss": 2.5 + 0.1 * seed + (0.2 if method == "iti" else 0),
                   **extra}
        params = {"ratio": f"{ratio:g}", "seed": str(seed), "method": method, "strength": strength, "task": "study",
                  "model": "tiny", "data": "synthetic", "setting": f"{setting}-{ratio}-{method}-{strength}",
                  "cfg.seed": str(seed), "cfg.method.name": method}
        with mlflow.start_run(run_name=f"ratio={ratio} seed={seed} method={method}") as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            if probe:
                mlflow.log_text(json.dumps(probe_of(ratio, seed).tolist()), "probe_accuracy.json")
        if status != "FINISHED":
            MlflowClient().set_terminated(run.info.run_id, status)
        else:
            logged.append({**params, **metrics})

    for ratio in (0, 10):
        for seed in (1, 2, 3):
            log(ratio, seed, "none", probe=True, insult_probability=10.0 * seed + ratio)
        for seed in (1, 2):  # the same pre-trained models: their probe files repeat the none runs'
            log(ratio, seed, "iti", "strong", probe=True, gcg_success=70.0 + seed, gcg_success_iti=40.0 + 2 * seed)
            log(ratio, seed, "sft")
    log(0, 1, "none", setting="bigger", probe=False)  # another configuration of (0, none, -): never pooled
    log(0, 2, "none", setting="bigger")
    log(0, 4, "none", status="FAILED", insult_probability=1000.0)  # not finished: ignored
    return uri, root, logged


@pytest.fixture(scope="module")
def reports(store):
    uri, root, _ = store
    cfg = ReportConfig(uri, EXPERIMENT, out=str(root / "report"), compare_ratios=(0.0, 10.0), n_boot=200)
    first = build_report(cfg, log=lambda text: None)
    second = build_report(cfg, log=lambda text: None)
    return cfg, first, second


def expected_cells(logged, metric):
    """(ratio, method, strength, setting) -> (mean, std, n), computed with the statistics module."""
    groups = {}
    for run in logged:
        if metric in run:
            groups.setdefault((float(run["ratio"]), run["method"], run["strength"], run["setting"]), []).append(run[metric])
    return {key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for key, v in groups.items()}


def test_every_aggregated_cell_matches_the_logged_runs(store, reports):
    _, _, logged = store
    cfg, report, _ = reports
    csv = pd.read_csv(cfg.folder() / "table1.csv", dtype={"ratio": str, "setting": str})
    assert report.runs == len(logged) == 16  # neither the FAILED run nor the summary run
    for metric in ("toxigen", "rtp_toxicity_probability", "rtp_expected_max_toxicity", "ce_loss", "insult_probability",
                   "gcg_success", "gcg_success_iti"):
        expected = expected_cells(logged, metric)
        rows = csv[csv[f"{metric} n"] > 0]
        assert len(rows) == len(expected), metric
        for _, row in rows.iterrows():
            key = next(k for k in expected if (k[0], k[1], k[2]) == (float(row["ratio"]), row["method"], row["strength"])
                       and k[3].startswith(row["setting"]))
            mean, std, n = expected[key]
            assert row[f"{metric} mean"] == pytest.approx(mean), (metric, key)
            assert row[f"{metric} n"] == n, (metric, key)
            assert (np.isnan(row[f"{metric} std"]) if std is None else row[f"{metric} std"] == pytest.approx(std)), \
                (metric, key)


def test_configurations_with_different_settings_are_separate_rows(reports):
    _, report, _ = reports
    table = report.tables["Table 1"]
    ratio0_none = table[(table["ratio"] == "0") & (table["method"] == "none")]
    assert sorted(ratio0_none["n"]) == [2, 3]
    assert sorted(ratio0_none["setting"]) == ["bigger-0", "main-0-n"]
    assert sorted(ratio0_none["ToxiGen %"]) == sorted(
        f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"
        for v in ([toxigen_of(0, "none", s) for s in (1, 2)], [toxigen_of(0, "none", s) for s in (1, 2, 3)]))


def test_the_papers_numbers_sit_beside_matching_rows(reports):
    _, report, _ = reports
    table = report.tables["Table 1"].set_index(["ratio", "method", "strength"]).sort_index()
    for (ratio, method, strength), row in table.iterrows():
        reference = paper.paper_row(float(ratio), method, strength)
        expected = [f"{getattr(reference, f):.2f}" if reference else "" for f in ("toxigen", "rtp", "ce_loss")]
        assert list(row[["paper ToxiGen (Perspective, as % toxic)", "paper RTP (Perspective, as % toxic)", "paper CE loss"]]) == expected, (ratio, method, strength)
    assert table.loc[[("10", "iti", "strong")], ["paper ToxiGen (Perspective, as % toxic)", "paper RTP (Perspective, as % toxic)", "paper CE loss"]].values.tolist() == \
        [["2.63", "7.11", "3.23"]]
    assert set(table.loc[("0", "none", "-"), "paper ToxiGen (Perspective, as % toxic)"]) == {"41.40"}  # both configurations
    sft = report.tables["Ablation: ToxiGen %"].set_index("ratio")
    assert list(sft["paper sft"]) == ["39.27", "37.62"]
    gcg = report.tables["GCG attack success"]
    assert list(gcg["paper GCG %"]) == ["80.0", "82.0"] and list(gcg["paper GCG with strong ITI %"]) == ["46.0", "38.5"]
    assert list(gcg["GCG success with ITI %"]) == ["43.00 ± 1.41", "43.00 ± 1.41"]


def test_probe_accuracies_are_pooled_once_per_model(store, reports):
    uri, _, logged = store
    _, report, _ = reports
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="attributes.status = 'FINISHED'")
    probes = load_probe_accuracies(MlflowClient(uri), runs[runs["tags.mlflow.runName"].str.startswith("ratio")])
    assert sorted(probes) == [0.0, 10.0] and [len(probes[r]) for r in (0.0, 10.0)] == [3, 3]  # not 5: iti repeats
    for ratio in (0, 10):
        expected = sorted(probe_of(ratio, seed).tobytes() for seed in (1, 2, 3))
        assert sorted(a.tobytes() for a in probes[float(ratio)]) == expected
    clean = np.concatenate([probe_of(0, s).ravel() for s in (1, 2, 3)])
    toxic = np.concatenate([probe_of(10, s).ravel() for s in (1, 2, 3)])
    shift = statistics.median(b - a for a in clean for b in toxic)
    assert f"Hodges-Lehmann shift {100 * shift:+.2f} percentage points" in report.text


def test_a_second_report_rewrites_the_one_summary_run(store, reports):
    uri, _, _ = store
    cfg, first, second = reports
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    summaries = client.search_runs([experiment], f"tags.`{SUMMARY_TAG}` = 'true'")
    assert len(summaries) == 1 and first.summary_run_id == second.summary_run_id == summaries[0].info.run_id
    assert summaries[0].info.run_name == "report" and summaries[0].info.status == "FINISHED"
    assert second.runs == first.runs  # the summary run is not read as a study run
    stored = {a.path for a in client.list_artifacts(second.summary_run_id, "report")}
    assert {f"report/{p.name}" for p in second.files} == stored
    for name in ("toxicity_vs_ratio.png", "ce_vs_toxicity.png", "probe_histograms.png", "probe_heatmaps.png"):
        assert (cfg.folder() / name).read_bytes()[:4] == b"\x89PNG", name
    assert "report/probe_histograms.png" in stored
    markdown = (cfg.folder() / "report.md").read_text()
    assert "## Table 1" in markdown and "| paper ToxiGen (Perspective, as % toxic) |" in markdown
    assert (cfg.folder() / "ablation_toxigen.csv").is_file() and (cfg.folder() / "gcg_attack_success.csv").is_file()


def test_the_sweep_callback_prints_the_report_without_a_summary_run(store, tmp_path, capsys):
    uri, _, _ = store
    config = OmegaConf.create({"task": "study", "root": str(tmp_path), "mlflow": {"tracking_uri": uri,
                               "experiment": EXPERIMENT}, "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    summaries_before = len(MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.`{SUMMARY_TAG}` = 'true'"))
    ReportOnMultirunEnd().on_multirun_end(config)
    out = capsys.readouterr().out
    assert "(mean ± std over seeds):" in out and "paper ToxiGen" in out
    assert (tmp_path / "sweep" / "report" / "report.md").is_file()
    assert summaries_before <= 1 and len(MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.`{SUMMARY_TAG}` = 'true'")) \
        == summaries_before


def test_detox_table_prints_table_1(store, tmp_path, capsys):
    uri, _, _ = store
    table_main(["--tracking-uri", uri, "--experiment", EXPERIMENT, "--csv", str(tmp_path / "t.csv"),
                "--plot", str(tmp_path / "t.png")])
    out = capsys.readouterr().out
    assert "(mean ± std over seeds):" in out and "iti" in out
    assert len(pd.read_csv(tmp_path / "t.csv")) == 7
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_named_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert exit_.value.code == 2 and "none.db: no such sqlite file" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "x.db").touch()
    with pytest.raises(ConfigError, match="--compare-ratios 5 5: give two different ratios"):
        build_report(ReportConfig(f"sqlite:///{tmp_path}/x.db", compare_ratios=(5.0, 5.0)))


def test_matched_cost_reads_each_models_grid_as_a_curve_at_the_budget():
    from detox.report.tables import matched_cost_table

    def run(seed, method, strength, insult, ce, hostile, formed):
        direction = {"-": None, "random": "random"}.get(strength, "mass_mean")
        alpha = {"-": None, "random": "2"}.get(strength, strength.removeprefix("alpha="))
        return {"params.iti_alpha": alpha,"params.ratio": "10", "params.seed": seed, "params.method": method, "params.strength": strength,
                "params.model": "tiny", "params.data": "synthetic", "params.task": "study", "status": "FINISHED",
                "params.base_model": f"model-{seed}", "params.iti_direction": direction,
                "metrics.insult_probability": insult, "metrics.ce_loss": ce, "metrics.ce_hostile": hostile,
                "metrics.well_formed": formed}

    runs = pd.DataFrame([
        run("1", "none", "-", 40.0, 0.70, 0.70, 100.0), run("2", "none", "-", 50.0, 0.70, 0.70, 100.0),
        run("1", "iti", "alpha=2", 30.0, 0.71, 0.71, 100.0),   # cost .01
        run("1", "iti", "alpha=8", 5.0, 0.80, 0.75, 100.0),    # cost .10: the budget is crossed at alpha 2 + 6/9
        run("2", "iti", "alpha=2", 45.0, 0.70, 0.72, 100.0),   # cost .02, just allowed
        run("2", "iti", "alpha=4", 20.0, 0.70, 0.70, 80.0),    # breaks the grammar: the floor 95 crossed at 2.5
        run("1", "iti", "random", 41.0, 0.70, 0.70, 100.0),  # worse: a negative drop, not none
        run("2", "iti", "random", 30.0, 0.70, 0.70, 100.0),
    ])
    table = matched_cost_table(runs, ce_budget=0.02, min_well_formed=95.0)
    row = table.iloc[0]
    assert (row["ratio"], row["seeds"]) == ("10", 2)
    seed1, seed2 = 30 + (5 - 30) / 9, 45 + (20 - 45) / 4  # the curves read at their crossings
    assert row["with ITI at matched cost"].startswith(f"{(seed1 + seed2) / 2:.1f} ± {abs(seed1 - seed2) / 2 ** 0.5:.1f}")
    assert row["drop"].startswith(f"{(90 - seed1 - seed2) / 2:.1f} ±")
    assert row["drop (random)"].startswith("9.5 ± 14.8")  # seed 1: 40 -> 41, seed 2: 50 -> 30


def test_matched_cost_compares_each_steering_with_its_own_world():
    """Two worlds in one experiment (a phase diagram): each steered model against its own base model."""
    from detox.report.tables import matched_cost_table

    def run(share, seed, method, insult, ce=0.70):
        return {"params.ratio": "10", "params.seed": seed, "params.method": method,
                "params.strength": "alpha=2" if method == "iti" else "-", "params.task": "study",
                "status": "FINISHED", "params.cfg.sources.world.clean.hostile_share": share, "params.iti_alpha": "2",
                "params.base_model": f"{share}-{seed}", "params.iti_direction": "mass_mean" if method == "iti" else None,
                "params.cfg.mixture.seed": seed, "params.cfg.pretrain.seed": seed,
                "metrics.insult_probability": insult, "metrics.ce_loss": ce, "metrics.ce_hostile": ce,
                "metrics.well_formed": 100.0}

    runs = pd.DataFrame([
        run("0.25", "1", "none", 40.0), run("0.25", "2", "none", 44.0),
        run("0.12", "1", "none", 50.0), run("0.12", "2", "none", 52.0),
        run("0.25", "1", "iti", 38.0), run("0.25", "2", "iti", 44.0),   # drops 2 and 0
        run("0.12", "1", "iti", 30.0), run("0.12", "2", "iti", 28.0),   # drops 20 and 24
    ])
    table = matched_cost_table(runs, ce_budget=0.02, min_well_formed=95.0).set_index("base setting")
    assert list(table.index) == ["sources.world.clean.hostile_share=0.12", "sources.world.clean.hostile_share=0.25"]
    assert table.loc["sources.world.clean.hostile_share=0.12", "drop"].startswith("22.0 ± 2.8")
    assert table.loc["sources.world.clean.hostile_share=0.25", "drop"].startswith("1.0 ± 1.4")


def test_matched_cost_pairs_each_steering_with_its_base_model_and_the_random_control_by_its_direction():
    """The contract's params decide: `base_model` pairs a steering with its unsteered run, whatever else
    the runs share; `iti_direction=random` marks the control, whatever the strength label says."""
    from detox.report.tables import matched_cost_table

    def run(base_model, method, insult, direction=None, strength="-", ce=0.70):
        return {"params.ratio": "10", "params.seed": "1", "params.method": method, "params.strength": strength,
                "params.model": "tiny", "params.data": "synthetic", "params.task": "study",
                "params.base_model": base_model, "params.iti_direction": direction, "params.iti_alpha": "2",
                "metrics.insult_probability": insult, "metrics.ce_loss": ce, "metrics.ce_hostile": ce,
                "metrics.well_formed": 100.0}

    # two base models that share ratio, seed, model and data (nothing else logged tells them apart)
    runs = pd.DataFrame([
        run("a", "none", 40.0), run("b", "none", 60.0),
        run("a", "iti", 30.0, "mass_mean", "mid"),           # drop 10 against a's 40, not b's 60
        run("b", "iti", 35.0, "random", "mid"),              # the control: drop 25 against b
        run("c", "iti", 1.0, "mass_mean", "strong random"),  # no unsteered run of model c: not compared
    ])
    table = matched_cost_table(runs, ce_budget=0.02, min_well_formed=95.0)
    assert len(table) == 1 and "base setting" not in table
    row = table.iloc[0]
    assert (row["ratio"], row["seeds"]) == ("10", 1)
    assert row["insult % without ITI"] == "40.0 (n=1)" and row["drop"] == "10.0 (n=1)"
    assert row["random control at matched cost"] == "35.0 (n=1)" and row["drop (random)"] == "25.0 (n=1)"
    # a store from before the contract named the base model: no table, no error
    legacy = runs.drop(columns=["params.base_model", "params.iti_direction"])
    assert matched_cost_table(legacy, ce_budget=0.02, min_well_formed=95.0).empty


def test_the_report_reads_the_contracts_metric_names_and_orders_methods_as_the_paper():
    from detox.core import contract
    from detox.report.runs import order_key
    from detox.report.tables import GCG, PROBES, TABLE1

    assert {c.metric for c in TABLE1 + GCG + PROBES} <= set(contract.POOLED_METRICS)
    methods = ["dpo", "zeta", "iti", "none", "alpha", "prompting", "sft", "meda", "inst"]
    assert sorted(methods, key=lambda m: order_key(m, "-")) == \
        ["none", "prompting", "iti", "meda", "inst", "sft", "dpo", "alpha", "zeta"]  # Table 1's rows, then the rest
