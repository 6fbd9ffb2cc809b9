"""End to end through the command line: a real Hydra multirun into a real MLflow store in a temp dir."""

import mlflow
import pytest

from helpers import launch


def finished_runs(root, experiment="detox-smoke"):
    """The jobs' runs (not the report's summary run)."""
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.detox.summary"] != "true"] if "tags.detox.summary" in runs else runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep started from a folder other than the repository's or root's."""
    root, elsewhere = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("elsewhere")
    first = launch("-m", "experiment=smoke", f"root={root}", "ratio=0,10", "seed=1,2", cwd=elsewhere)
    assert first.returncode == 0, first.stderr[-3000:]
    assert list(elsewhere.iterdir()) == []  # every output, MLflow's artifacts included, lives under root
    return root, first


def test_sweep_logs_one_run_per_job(sweep):
    root, first = sweep
    runs = finished_runs(root)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert sorted(zip(runs["params.ratio"], runs["params.seed"])) == [("0", "1"), ("0", "2"), ("10", "1"), ("10", "2")]
    for metric in ("toxigen", "rtp_expected_max_toxicity", "rtp_toxicity_probability", "ce_loss", "mix_realised_ratio"):
        assert runs[f"metrics.{metric}"].notna().all(), metric
    assert set(runs["tags.mlflow.runName"]) == {f"ratio={r} seed={s} method=none" for r in (0, 10) for s in (1, 2)}
    assert runs["tags.mlflow.source.git.commit"].str.len().eq(40).all()
    # the table printed at the end of the sweep aggregates the two seeds
    assert "mean ± std over seeds" in first.stdout
    table = first.stdout.split("mean ± std over seeds):")[1].splitlines()
    assert len([line for line in table if line.strip().startswith(("0 ", "10 "))]) == 2


def test_artifacts_live_under_root(sweep):
    root, _ = sweep
    runs = finished_runs(root)
    assert all(uri.startswith((root / "mlartifacts").as_uri()) for uri in runs["artifact_uri"])
    assert list((root / "mlartifacts").rglob("generations.jsonl"))


def test_rerun_trains_nothing_and_adds_no_rows(sweep):
    root, _ = sweep
    before = finished_runs(root).set_index("run_id")["end_time"]
    again = launch("-m", "experiment=smoke", f"root={root}", "ratio=0,10", "seed=1,2", "iti=strong")
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "[pretrain] built" not in log and log.count("nothing to do") == 4
    runs = finished_runs(root).set_index("run_id")
    assert len(runs) == 4  # iti does not touch method=none, so these are the same four jobs
    assert runs["end_time"].equals(before)  # finished runs are not re-opened: their duration stays their own
    assert set(runs["tags.cache.all_hit"]) == {"false"}  # the cache tags say what the run itself built


@pytest.mark.parametrize("override, message, code", [
    ("ratio=150", "ratio=150: the toxic share is a percentage in [0, 100)", 2),
    ("trainer.lr=-1", "trainer.lr=-1: must lie in (0, inf)", 2),
    ("experiment=toy toy.n_states=17", "toy.n_states=17 is not a multiple of toy.n_chains=6", 2),
    ("method=magic", "Could not find 'method/magic'", 1),
])
def test_bad_input_fails_before_any_work(tmp_path, override, message, code):
    result = launch("experiment=smoke", f"root={tmp_path}", *override.split())
    assert result.returncode == code
    assert message in result.stderr + result.stdout
    if code == 2:  # ours: one line, no stack trace
        output = result.stdout + result.stderr
        assert len([line for line in output.splitlines() if "invalid configuration" in line]) == 1
        assert "Traceback" not in output
    assert not (tmp_path / "cache").exists()


def test_toy_experiment_through_the_launcher(tmp_path):
    result = launch("experiment=toy", f"root={tmp_path}", "toy.seeds=[0,1]", "toy.shares=[0.02]", "toy.steps=30",
                    "toy.eval_per_chain=16", "toy.random_trials=200", "toy.workers=1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(tmp_path, "detox-toy")
    assert len(runs) == 1 and runs["metrics.welch_bound"].iloc[0] > 0
    assert (tmp_path / "toy" / "toy_entanglement.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "toy" / "toy_runs.jsonl").read_text().splitlines()) == 4  # (0.02 and uniform) x 2 seeds


def test_pretraining_loss_curve_is_logged_once(sweep):
    root, _ = sweep
    runs = finished_runs(root)
    history = mlflow.tracking.MlflowClient().get_metric_history(runs["run_id"].iloc[0], "pretrain_loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) > 0  # one point a step, even after the re-run re-opened the run


def test_parallel_processes_share_one_store_and_cache(tmp_path):
    """hydra/launcher=processes starts every job at once: the locks must keep store and cache whole."""
    result = launch("-m", "hydra/launcher=processes", "experiment=smoke", f"root={tmp_path}", "ratio=0,10", "seed=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(tmp_path)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    sources = [p for p in (tmp_path / "cache" / "sources").iterdir() if p.is_dir()]
    assert len(sources) == 1  # built by one job, read by all four


def test_iti_sweep_reuses_the_base_model_and_logs_its_probes(sweep):
    """Runs last: it adds rows to the sweep's store."""
    root, _ = sweep
    result = launch("-m", "experiment=smoke", f"root={root}", "method=iti", "iti=weak,strong", "ratio=0", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "[pretrain] built" not in log and log.count("[pretrain] cached") == 2
    assert log.count("[probe] built") == 1 and log.count("[probe] cached") == 1  # every strength shares the probes
    runs = finished_runs(root)
    iti = runs[runs["params.method"] == "iti"]
    assert sorted(iti["params.strength"]) == ["strong", "weak"]
    for metric in ("insult_probability", "well_formed", "ce_hostile", "probe_best_accuracy", "iti_heads"):
        assert iti[f"metrics.{metric}"].notna().all(), metric
    client = mlflow.tracking.MlflowClient()
    assert {"probe_accuracy.json", "probe_accuracy.png", "generations.jsonl"} <= \
        {a.path for a in client.list_artifacts(iti["run_id"].iloc[0])}
