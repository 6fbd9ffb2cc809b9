"""A steering's trade-off curve, measured: one base model steered at each strength of a list (0 first:
the unsteered point), each point measured on what the trade-off needs (detox.core.tradeoff.MEASURES:
the insult probability at the decision point, the ToxiGen-like greedy continuations and their
well-formed share, the CE loss on clean and hostile-context text; the costly RTP-like samples left
out). Shared by the methods that draw one (iti_curve: ITI's head shifts; caa: residual additions);
each passes how to steer the model at a strength. A module whose name starts with "_" registers nothing."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

from detox.core.artifacts import STAGE
from detox.core.plan import Inputs
from detox.core.tradeoff import CURVE_FILE, MEASURES

# (model, alpha, the point's folder) -> a context manager steering the model at that strength
Steering = Callable[[object, float, Path], AbstractContextManager]


def curve_spec(job) -> dict:
    """What a curve's measures depend on apart from the steering: the evaluation options it reads, the scorer."""
    return {"seed": job.seed, "scorer": job.scorer.result_spec(),
            "evaluate": {k: getattr(job.evaluate, k) for k in ("toxigen_max_new_tokens", "batch_size", "heldout_docs")}}


def greedy_measure(job, sources: Path) -> Callable[[object, object, Path, str], dict]:
    """(model, tokenizer, folder, prompt prefix) -> the MEASURES of the greedy evaluation (the decision
    point, the ToxiGen-like continuations, the CE losses; generations written to the folder). Also the
    fine-tuning attack's measure (detox.pipeline, the `tamper` stage)."""
    from detox.data.parts import heldout_texts, load_part
    from detox.evaluation import evaluate, scorers
    from detox.evaluation.prompt_sets import PROMPT_SETS

    greedy = tuple(s for s in PROMPT_SETS if s.name == "toxigen")  # the decision point and greedy continuations
    rows = {s.name: load_part(sources, s.part) for s in greedy}
    heldout = heldout_texts(sources)
    scorer = scorers.make_scorer(job.scorer, job.root)

    def measure(model, tokenizer, folder: Path, prefix: str = "") -> dict:
        measured = evaluate.evaluate(model, tokenizer, rows, heldout, scorer, job.evaluate, job.scorer.threshold,
                                     job.seed, folder, seq_len=job.data.seq_len, sets=greedy, prefix=prefix)
        return {m: measured[m] for m in MEASURES if m in measured}

    return measure


def measure_curve(job, inputs: Inputs, alphas: list[float], steering: Steering, out: Path, extra: dict,
                  model_dir: Path | None = None) -> dict:
    """Measure the base model (`model_dir`, by default the pre-trained one's `hf/`) at every alpha of
    `alphas` under `steering`; write CURVE_FILE ({"alphas", **extra, "points"}) and each point's
    generations under point_NN/ in `out`."""
    from detox.core import artifacts
    from detox.core.models import load_model

    model, tokenizer = load_model(model_dir or inputs[STAGE.PRETRAIN] / artifacts.HF_MODEL)
    measure = greedy_measure(job, inputs[STAGE.SOURCES])
    points = []
    for index, alpha in enumerate(alphas):
        point = out / f"point_{index:02d}"
        point.mkdir()
        with steering(model, alpha, point):
            points.append({"alpha": alpha, **measure(model, tokenizer, point)})
    (out / CURVE_FILE).write_text(json.dumps({"alphas": list(alphas), **extra, "points": points}, indent=1))
    return {"curve_points": len(points)}
