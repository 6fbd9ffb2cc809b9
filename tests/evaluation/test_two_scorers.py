"""Two evaluations of one model with two scorers: two evaluation keys (the base model built once), two
MLflow runs each carrying its scorer at its version, and a report that never puts their figures in one
column (a Table 1 each, its scorer named) and says which scorer gave the paper's numbers."""

import mlflow
import pytest
from helpers import compose_job, tiny_classifier

from detox import jobs
from detox.core import contract
from detox.core.artifacts import STAGE
from detox.core.cache import StageCache
from detox.job import JobConfig
from detox.pipeline import study_plan
from detox.report import ReportConfig, build_report


@pytest.mark.slow  # two smoke jobs (one pre-training) with MLflow, and the report: about 40 s
def test_two_scorers_two_keys_two_runs_two_tables(tmp_path):
    classifier = tiny_classifier(tmp_path / "classifier", labels=("neutral", "toxic"))
    common = ["experiment=smoke", f"root={tmp_path / 'root'}"]
    oracle = JobConfig.from_dict(compose_job(*common))
    scored = JobConfig.from_dict(compose_job(*common, "scorer=classifier", f"scorer.model={classifier}",
                                             "scorer.toxic_label=toxic", "scorer.activation=softmax"))
    keys = [study_plan(job).keys() for job in (oracle, scored)]
    assert keys[0][STAGE.PRETRAIN] == keys[1][STAGE.PRETRAIN]  # one model
    assert keys[0][STAGE.EVALUATE] != keys[1][STAGE.EVALUATE]  # two evaluations of it
    print(f"evaluate keys: oracle {keys[0][STAGE.EVALUATE]}, classifier {keys[1][STAGE.EVALUATE]}")

    results = [jobs.run(job, "", log=lambda _: None) for job in (oracle, scored)]
    cache = StageCache(tmp_path / "root" / "cache")
    assert all(cache.path(STAGE.EVALUATE, k[STAGE.EVALUATE]).is_dir() for k in keys)
    assert "classifier_truncated" in results[1][1].metrics and "classifier_truncated" not in results[0][1].metrics

    mlflow.set_tracking_uri(oracle.tracking_uri)
    runs = {r.info.run_id: r for r in mlflow.search_runs(experiment_names=["detox-smoke"], output_format="list")}
    labels = [runs[run_id].data.params[contract.SCORER] for run_id, _ in results]
    assert labels == ["oracle", scored.scorer.label()] and labels[1].startswith("classifier files:")
    assert runs[results[1][0]].data.params["cfg.evaluate.scorer.identity.files"] == scored.scorer.identity()["files"]
    print(f"MLflow runs: {[(run_id, label) for (run_id, _), label in zip(results, labels)]}")

    report = build_report(ReportConfig(tracking_uri=oracle.tracking_uri, experiment="detox-smoke",
                                       out=str(tmp_path / "report"), summary_run=False), log=print)
    assert sorted(report.scorers) == sorted(labels)
    firsts = [title for title in report.tables if title.startswith("Table 1")]
    assert sorted(firsts) == sorted(f"Table 1 (scorer: {label})" for label in labels)
    for title in firsts:
        assert len(report.tables[title]) == 1 and "scorer" not in report.tables[title]  # one scorer a table
    assert all("paper ToxiGen (Perspective, as % toxic)" in report.tables[title] for title in firsts)
    assert "the paper's by Google's Perspective API" in report.text
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert all(f"## {title}" in markdown for title in firsts)
