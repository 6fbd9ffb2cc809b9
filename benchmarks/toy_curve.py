"""Benchmark: the default toy superposition curve (all default shares × 10 seeds), timed.

    /work/venv/bin/python benchmarks/toy_curve.py                      # 2 worker processes
    /work/venv/bin/python benchmarks/toy_curve.py minority_overlap=2   # any ToyConfig field=value

Prints the wall time and the summary table; writes outputs/toy_benchmark/toy_curve.png and
toy_runs.jsonl (one JSON object per trained model). Target: under 10 minutes on 2 CPU cores.
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.toy import ToyConfig, plot_toy_curve, run_toy_curve, summary_table  # noqa: E402


def main(argv: list[str]) -> None:
    overrides = {"workers": 2} | {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in argv)}
    cfg = ToyConfig(**overrides)
    out = Path("outputs/toy_benchmark")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run_toy_curve(cfg)
    wall = time.perf_counter() - start
    plot_toy_curve(result, out / "toy_curve.png")
    (out / "toy_runs.jsonl").write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in result.rows))
    print(f"config: {overrides}")
    print(f"{len(result.rows)} runs ({cfg.steps} steps each) with {cfg.workers} workers: wall time {wall:.0f} s "
          f"({wall / 60:.1f} min); mean run {sum(r.seconds for r in result.rows) / len(result.rows):.1f} s")
    print(summary_table(result))
    print(f"plot: {out / 'toy_curve.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
