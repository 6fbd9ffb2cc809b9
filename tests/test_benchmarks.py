"""Every benchmark still imports against the current code (they run by hand, so nothing else would notice)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top-level imports only: each runs its work under __main__
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


def test_file_hash_benchmark_runs_on_a_small_file(tmp_path, capsys):
    """benchmarks/file_hash.py end to end on 1 MB (its figures are for 1 GB, run by hand)."""
    spec = importlib.util.spec_from_file_location("benchmark_file_hash", BENCHMARKS[0].with_name("file_hash.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--gb", "0.001", "--rounds", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "sha256" in out and "x read" in out and "memoised, new process" in out


def test_gpu_throughput_benchmark_runs_the_stage_and_the_bare_loop_on_the_cpu(tmp_path, capsys):
    """benchmarks/gpu_throughput.py end to end, tiny, on the CPU (its OLMo-1B figures need GPUs)."""
    spec = importlib.util.spec_from_file_location("benchmark_gpu_throughput",
                                                  BENCHMARKS[0].with_name("gpu_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--cpu", "--steps", "6", "--window", "2", "--warmup", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "detox pre-training (Lightning, FSDP2 over 1 device(s)" in out and "bare PyTorch loop" in out
    for run in ("stage", "bare"):
        assert result[run]["tokens_per_s_per_device"] > 0
    assert result["ratio"] > 0 and out.strip().splitlines()[-1].startswith("RESULT {")
    assert (tmp_path / "stage" / "hf" / "model.safetensors").is_file()  # the stage ran whole, export included


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_wheels.sh"])
def test_gpu_node_scripts_parse_and_explain_themselves(script):
    import subprocess

    path = BENCHMARKS[0].with_name(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    usage = subprocess.run(["bash", str(path)], capture_output=True, text=True)
    assert usage.returncode == 2 and f"bash benchmarks/{script} WHEELS_DIR" in usage.stdout


@pytest.mark.slow
def test_gpu_check_runs_its_steps_tiny_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh's --cpu mode: the smoke study (pre-train -> probe -> ITI -> evaluate ->
    report) and the throughput benchmark, with the summary the GPU run prints."""
    import os
    import subprocess

    result = subprocess.run(["bash", str(BENCHMARKS[0].with_name("gpu_check.sh")), "-", "--cpu"],
                            env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=900)
    summary = result.stdout.split("detox GPU check: summary (cpu)")[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "ok" in summary and "FAILED" not in summary
    assert summary.count("insult probability") == 2  # the two jobs, each evaluated
    assert "stage / bare loop:" in summary and (tmp_path / "study" / "sweep" / "report").is_dir()


def test_the_negative_control_splits_a_ratios_seeds_and_counts_what_the_tests_call(tmp_path):
    """benchmarks/negative_control.py on 6 seeds of one ratio (10 splits into halves of 3): the drop, its
    share removed and the share removed at alpha 1 all grow linearly with the seed's slope, so they share
    one t-test's p (scipy's, computed here apart) and Holm over the three gives 3p; the CE tax is equal
    everywhere (no test). A difference is called where that p (uncorrected) or 3p (Holm) is below 5 %."""
    from itertools import combinations

    import mlflow
    from helpers import log_curve_run
    from scipy import stats

    spec = importlib.util.spec_from_file_location("benchmark_negative_control",
                                                  BENCHMARKS[0].with_name("negative_control.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("split")
    slopes = {1: 10.0, 2: 10.5, 3: 12.0, 4: 14.0, 5: 20.0, 6: 21.0}
    for seed, slope in slopes.items():
        log_curve_run(0, seed, slope)
        log_curve_run(10, seed, 40.0)  # another ratio: never part of a split
    runs = module.load_runs(uri, "split")
    table = module.false_positives(runs, module.load_curves(mlflow.MlflowClient(uri), runs), 0.0, n_boot=5)
    halves = [h for h in combinations(slopes, 3) if 1 in h]
    p = [stats.ttest_ind([slopes[s] for s in slopes if s not in h], [slopes[s] for s in h]).pvalue for h in halves]
    row = table.set_index("claim").loc["(b) detoxification"]
    assert row["splits"] == len(halves) == 10
    assert row["called uncorrected %"] == pytest.approx(100 * sum(q < 0.05 for q in p) / 10)
    assert row["called after Holm %"] == pytest.approx(100 * sum(3 * q < 0.05 for q in p) / 10)
    # chosen so: one split (seeds 1-3 against 4-6, p = 0.03) is called alone, and not after Holm
    assert (row["called uncorrected %"], row["called after Holm %"]) == (10.0, 0.0)
