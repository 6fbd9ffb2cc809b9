"""detox-scorer-check: how a toxicity scorer agrees with scores and labels that no one here wrote.

    detox-scorer-check --rtp /data/realtoxicityprompts/prompts.jsonl --pol /data/pol_062016-112019_labeled.ndjson.zst \\
        --toxigen /data/toxigen/annotated/test.parquet                  # the default open scorer
    detox-scorer-check --model /models/toxigen_roberta --toxic-label LABEL_1 --activation softmax --rtp ...
    detox-scorer-check ... --calibrate     # also fit a monotone map onto Perspective's scale (scorer.calibration=...)

The references and figures are detox/evaluation/agreement.py's: Perspective's published TOXICITY with
RealToxicityPrompts and the /pol/ corpus (Spearman, ROC-AUC against Perspective >= 0.5, the share at or
above 0.5 by each), ToxiGen's human ratings (ROC-AUC, accuracy at the scorer's threshold), and with
--calibrate an isotonic map onto Perspective's scale fitted on one half and checked on the other.

Writes to --out: scorer_check.csv and .md (the table), scorer_check.png (a calibration plot per reference),
calibration.json with --calibrate (`scorer.calibration=<file>` applies it to every score of a job, and it
is part of the evaluation's key); prints the table; and logs one MLflow run (experiment --experiment,
default detox-scorer-check) with the scorer's identity as params, each figure as a metric, and the files.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from dataclasses import asdict
from pathlib import Path

from detox.core.schema import ConfigError
from detox.evaluation.agreement import Row, calibrate, check, plot, table_text
from detox.evaluation.config import ScorerConfig

# the default scorer: conf/scorer/classifier.yaml's (tests/evaluation/test_scorer_check.py holds them equal)
DEFAULT_MODEL, DEFAULT_LABEL, DEFAULT_ACTIVATION = "unitary/unbiased-toxic-roberta", "toxicity", "sigmoid"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="detox-scorer-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a local classifier folder or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--revision", help="hub ids: the commit (or branch, tag) to score with; default main")
    parser.add_argument("--toxic-label", default=DEFAULT_LABEL, help=f"the label scored (default {DEFAULT_LABEL})")
    parser.add_argument("--activation", default=DEFAULT_ACTIVATION, choices=("auto", "softmax", "sigmoid"))
    parser.add_argument("--threshold", type=float, default=0.5, help="a score at or above this counts as toxic")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rtp", help="RealToxicityPrompts' prompts.jsonl")
    parser.add_argument("--pol", help="the /pol/ corpus: NDJSON threads, optionally .zst")
    parser.add_argument("--toxigen", help="ToxiGen's annotated split: parquet, CSV or JSON lines")
    parser.add_argument("--limit", type=int, default=2000, help="texts read per reference (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--human-toxic-above", type=float, default=3.0, help="ToxiGen: toxic where toxicity_human > this")
    parser.add_argument("--calibrate", action="store_true", help="fit and check a map onto Perspective's scale")
    parser.add_argument("--out", default="outputs/scorer_check", help="folder for the table, figure and calibration")
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default sqlite:///<out>/../mlflow.db)")
    parser.add_argument("--experiment", default="detox-scorer-check")
    args = parser.parse_args(argv)
    cfg = ScorerConfig(name="classifier", model=args.model, revision=args.revision, toxic_label=args.toxic_label,
                       activation=args.activation, threshold=args.threshold, batch_size=args.batch_size)
    out = Path(args.out)
    try:
        if args.limit < 2:
            raise ConfigError(f"--limit {args.limit}: needs at least 2 texts a reference")
        cfg.check()
        cfg.require_version()
        from detox.evaluation.scorers import ClassifierScorer

        scorer = ClassifierScorer(cfg)
        rows, pairs = check(scorer, cfg.threshold, args.rtp, args.pol, args.toxigen, args.limit, args.seed,
                            args.human_toxic_above)
    except ConfigError as error:
        parser.error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    label = cfg.label()
    terminal, md = table_text(rows)
    print(f"Scorer {label} (threshold {cfg.threshold:g}) against published scores and human labels:")
    print(terminal)
    (out / "scorer_check.md").write_text(f"Scorer `{label}`, threshold {cfg.threshold:g}\n\n{md}")
    import pandas as pd

    pd.DataFrame([asdict(r) for r in rows]).to_csv(out / "scorer_check.csv", index=False)
    files = [out / "scorer_check.csv", out / "scorer_check.md"]
    calibration = None
    if args.calibrate:
        calibration = calibrate(pairs, args.seed, {"scorer": cfg.identity(), "scorer_label": label,
                                                  "created": datetime.date.today().isoformat()})
        files.append(calibration.save(out / "calibration.json"))
        c = calibration.checked_on
        print(f"Calibration onto Perspective's scale: fitted on {calibration.fitted_on['texts']} texts, checked on "
              f"{c['texts']}: mean |difference| {c['mean_abs_difference_before']:.3f} -> "
              f"{c['mean_abs_difference_after']:.3f}; share >= 0.5: Perspective {c['perspective_toxic_share']:.3f}, "
              f"scorer {c['scorer_toxic_share_before']:.3f} -> {c['scorer_toxic_share_after']:.3f}. "
              f"Apply it: scorer.calibration={(out / 'calibration.json').resolve()}")
    files.append(plot(pairs, rows, label, out / "scorer_check.png", calibration))
    print(f"Figure: {out / 'scorer_check.png'}")
    metrics = {f"{r.dataset}_{name}": value for r in rows for name, value in asdict(r).items()
               if name not in ("dataset", "reference") and not (isinstance(value, float) and math.isnan(value))}
    if calibration is not None:
        metrics.update({f"calibration_{name}": float(value) for name, value in calibration.checked_on.items()})
    params = {"scorer": label, "scorer_model": cfg.model, "scorer_identity": cfg.identity(),
              "toxic_label": cfg.toxic_label, "activation": scorer.activation, "threshold": cfg.threshold,
              "limit": args.limit, "seed": args.seed, "human_toxic_above": args.human_toxic_above,
              **{f"file_{name}": path for name, path in (("rtp", args.rtp), ("pol", args.pol),
                                                         ("toxigen", args.toxigen)) if path}}
    uri = args.tracking_uri or f"sqlite:///{out.resolve().parent / 'mlflow.db'}"
    from detox import tracking

    run_id = tracking.log_check(uri, args.experiment, out.resolve().parent, f"scorer-check {label}", params, metrics,
                                files)
    print(f"MLflow run {run_id} in experiment {args.experiment!r} at {uri}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
