"""The air-gap rehearsal of the GPU check (benchmarks/gpu_wheels.sh, benchmarks/gpu_check.sh): the wheel folder
is built where the registry is reachable, then a fresh virtual environment installs detox from it alone
(pip --no-index, no pip configuration, no other folder) and runs the check's CPU mode: the node checks, the
install, the smoke study and the throughput benchmark. Several minutes: CI runs it after the README's tests."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.slow
def test_the_gpu_checks_wheel_folder_installs_detox_offline_and_runs_the_smoke_study(tmp_path):
    wheels, checkout = tmp_path / "wheels", tmp_path / "detox"
    # torch too: this machine's CPU build (the GPU node brings its own CUDA build)
    build = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_wheels.sh"), str(wheels)], text=True,
                           capture_output=True, env={**os.environ, "PYTHON": sys.executable, "TORCH": "torch==2.13.0"},
                           timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    files = list(wheels.glob("*.whl"))
    size = sum(f.stat().st_size for f in files)
    print(f"wheel folder: {len(files)} wheels, {size / 2**20:,.0f} MiB; {build.stdout.splitlines()[-2]}")
    assert any(f.name.startswith("antlr4_python3_runtime-4.9.3") for f in files)  # published only as source
    assert not any(f.name.startswith(("pytest-", "trl-", "lm_eval-", "psycopg2")) for f in files)  # no test extras

    # a checkout without git, outputs or virtual environments, and an interpreter that knows no package
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".git", ".venv", "outputs", "multirun", "__pycache__",
                                                                  "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    offline = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON"))}
    python = str(tmp_path / "venv" / "bin" / "python")
    offline.update(PIP_CONFIG_FILE=os.devnull, PYTHON=python, OUT=str(tmp_path / "check"), PIP_NO_INDEX="1")
    # the node's own PyTorch, which the check expects there: here the folder's CPU build
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), "torch==2.13.0"],
                   env=offline, check=True, timeout=1800)
    check = subprocess.run(["nice", "-n", "10", "bash", str(checkout / "benchmarks" / "gpu_check.sh"), str(wheels),
                            "--cpu"], text=True, capture_output=True, env=offline, cwd=tmp_path, timeout=3600)
    print(check.stdout[-4000:])
    assert check.returncode == 0, check.stdout[-6000:] + check.stderr[-2000:]
    for step in ("node: PyTorch >= 2.7", f"install from {wheels} (offline)", "smoke study on cpu",
                 "throughput benchmark (FSDP2 path)"):
        assert any(line.startswith("ok ") and step in line for line in check.stdout.splitlines()), step
    assert "ToxiGen" in check.stdout  # each smoke job's figures
