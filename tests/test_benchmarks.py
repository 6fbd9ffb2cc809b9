"""Every benchmark still imports against the current code (they run by hand, so nothing else would notice)."""

import importlib.util
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
