"""Benchmark: a toy superposition curve (all shares of a conf/toy preset × its seeds), timed.

    python benchmarks/toy_curve.py                      # conf/toy/default.yaml, 2 worker processes
    python benchmarks/toy_curve.py toy=paper            # the paper's design, conf/toy/paper.yaml
    python benchmarks/toy_curve.py minority_overlap=2   # any ToyConfig field=value
    python benchmarks/toy_curve.py out=/tmp/toy            # another output folder

Prints the wall time, the workers' CPU time (wall time on idle cores ≈ CPU time / workers, a figure
that other load on the machine does not inflate) and the summary table; writes toy_curve.png and
toy_runs.jsonl (one JSON object per trained model) to `out` (default outputs/toy_benchmark/<overrides>).
Target: under 10 minutes on 2 CPU cores for the default preset.
"""

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detox.toy.config import ToyConfig  # noqa: E402
from detox.toy.plot import plot_toy_curve  # noqa: E402
from detox.toy.sweep import run_toy_curve  # noqa: E402
from detox.toy.table import summary_table  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "toy"


def main(argv: list[str]) -> None:
    overrides = {"workers": 2} | {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in argv)}
    name = "_".join(a for a in argv if not a.startswith(("workers=", "out="))) or "default"
    out = Path(overrides.pop("out", f"outputs/toy_benchmark/{name}"))
    preset = CONF / f"{overrides.pop('toy', 'default')}.yaml"
    if not preset.is_file():
        sys.exit(f"toy={preset.stem}: no preset {preset}")
    cfg = ToyConfig(**(yaml.safe_load(preset.read_text()) | overrides))
    cfg.validate()
    print(f"config: {preset.name} + {overrides}", flush=True)
    start = time.perf_counter()
    result = run_toy_curve(cfg, on_row=lambda r: print(
        f"  run share {r.share:g} seed {r.seed}: minority {r.minority_entanglement:.3f}, others "
        f"{r.others_entanglement:.3f}, {r.steps_run} steps, {r.seconds:.0f} s", flush=True))
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if cfg.workers > 1 else resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"{len(result.rows)} runs ({cfg.steps} steps at most) with {cfg.workers} workers: wall time {wall:.0f} s "
          f"({wall / 60:.1f} min); mean run {sum(r.seconds for r in result.rows) / len(result.rows):.1f} s; "
          f"CPU time {cpu:.0f} s (≈ {cpu / cfg.workers / 60:.1f} min wall on {cfg.workers} idle cores)")
    print(summary_table(result), flush=True)
    out.mkdir(parents=True, exist_ok=True)  # only now: a long run must not lose its table to a cleaned folder
    plot_toy_curve(result, out / "toy_curve.png")
    (out / "toy_runs.jsonl").write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in result.rows))
    print(f"plot: {out / 'toy_curve.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
