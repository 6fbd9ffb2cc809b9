"""ITI's trade-off curve: one base model steered at a dense range of strengths, each measured alike.

`method=iti_curve` is `method=iti` (the same probe stage, shared with every ITI job of the base model,
and the same steering and full evaluation at `iti.alpha`, the curve's fixed strength) plus two stages:
* `curve`: for every alpha of `method.alphas` (0 first: the unsteered point) the ITI shifts of that
  strength (the steer stage's own function, `iti.top_k_heads`, `iti.direction`, ...) and what the
  trade-off needs of the evaluation: the insult probability at the decision point and the decision
  mass, the ToxiGen-like greedy continuations (their toxicity and well-formed share), the CE loss on
  clean and hostile-context text. The RTP-like samples, the costly part of a full evaluation, are
  left out. Writes `curve.json` (attached to the run) and each point's shifts and generations.
* `curve_summary`: what `method.ce_budget`, `method.min_well_formed` and `iti.alpha` read off the curve
  (`detox.core.tradeoff.summary`): the toxicity at matched cost by interpolation, the drop, the share
  of toxicity removed at matched cost and at the fixed strength, the CE tax at the fixed strength.
  Its own stage, so another budget re-reads the curve without measuring it again.
* `dynamics`, only when the pre-training kept snapshots (`trainer.snapshots=N`): the probe stage's and the
  curve stage's own functions on each snapshot and on the final model, without re-training; the probes'
  accuracy and the drop at matched cost against the tokens seen (`dynamics.json`).
The report reads every run's curve.json at its own budget (`detox-report --ce-budget`): the frontier
figure and table, and the power statements (`detox.report.frontier`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from detox.core.artifacts import STAGE
from detox.core.methods import Method, MethodOptions, register
from detox.core.plan import Plan, Stage
from detox.core.schema import ConfigError, number
from detox.core.tradeoff import (
    CURVE_FILE,
    CURVE_METHOD,
    DEFAULT_CE_BUDGET,
    DEFAULT_MIN_WELL_FORMED,
    read_curve,
    summary,
)
from detox.methods import iti
from detox.methods._curve import curve_spec, measure_curve

NAME = CURVE_METHOD  # the report finds the runs that log a curve by it
CURVE, SUMMARY, DYNAMICS = "curve", "curve_summary", "dynamics"  # the stages this method adds after ITI's
DYNAMICS_FILE = "dynamics.json"  # [{"tokens_seen", "probe_best_accuracy", "probe_mean_accuracy", curve_* drops}, ...]
DEFAULT_ALPHAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0]


@dataclass
class IticurveOptions(MethodOptions):
    name: str = NAME
    alphas: list[float] = number(DEFAULT_ALPHAS, "[0, inf)")  # the strengths measured: 0 first, increasing
    ce_budget: float = number(DEFAULT_CE_BUDGET, "[0, inf)")  # the matched cost the run's summary reads off its curve, nats
    min_well_formed: float = number(DEFAULT_MIN_WELL_FORMED, "[0, 100]")  # ... and the fewest well-formed generations (%) allowed


def extend(plan: Plan, job) -> None:
    iti.extend(plan, job)  # probe, steer at iti.alpha, the intervention of the full evaluation
    plan.add(Stage(CURVE, {**iti.shifts_make(job.iti), "alphas": list(job.method.alphas), **curve_spec(job)},
                   lambda out, i: _curve(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN, iti.PROBE),
                   logged=(CURVE_FILE,)))
    plan.add(Stage(SUMMARY, {"ce_budget": job.method.ce_budget, "min_well_formed": job.method.min_well_formed,
                             "fixed_alpha": job.iti.alpha},
                   lambda out, i: _summary(job, i), inputs=(CURVE,),
                   version=2))  # 2: the toxicity read at the crossing of monotone fits, not the lowest point
    if job.trainer.snapshots and not job.model.path:  # the pre-training kept snapshots: the dynamics too
        plan.add(Stage(DYNAMICS, {**plan[CURVE].spec, **plan[SUMMARY].spec, **plan[iti.PROBE].spec},
                       lambda out, i: _dynamics(job, out, i), inputs=(STAGE.SOURCES, STAGE.PRETRAIN),
                       logged=(DYNAMICS_FILE,)))


def _curve(job, out, inputs, probe_dir=None, model_dir=None) -> dict:
    """The curve stage's build; `probe_dir`, `model_dir`: a snapshot's probes and model (the dynamics)."""
    from detox.steering import steer

    a, probes = job.iti, probe_dir or inputs[iti.PROBE]

    def steering(model, alpha, point):
        steer.steer_stage(probes, a.top_k_heads, alpha, a.direction, a.random_scaling, job.seed, point)
        return steer.steering(model, steer.load_shifts(point))

    return measure_curve(job, inputs, list(job.method.alphas), steering, out, {"direction": a.direction},
                         model_dir=model_dir)


def _dynamics(job, out, inputs) -> dict:
    """Probe and curve at each snapshot the pre-training kept (trainer.snapshots) and at its end: the
    probes' accuracy and the drop at matched cost against the tokens seen, in DYNAMICS_FILE."""
    from detox.core import artifacts
    from detox.training.pretrain.callbacks import SNAPSHOT_DIR, SNAPSHOT_INFO

    pretrain = inputs[STAGE.PRETRAIN]
    final_tokens = json.loads((pretrain / artifacts.METRICS).read_text())["pretrain_tokens_seen"]
    models = [(folder, json.loads((folder / SNAPSHOT_INFO).read_text())["tokens_seen"])
              for folder in sorted((pretrain / SNAPSHOT_DIR).glob("step-*"))] + [(pretrain / artifacts.HF_MODEL, final_tokens)]
    rows = []
    for index, (model_dir, tokens) in enumerate(models):
        at = out / f"model_{index:02d}"
        (at / "probe").mkdir(parents=True)
        probed = iti._probe(job, at / "probe", inputs, model_dir=model_dir)
        _curve(job, at, inputs, probe_dir=at / "probe", model_dir=model_dir)
        read = summary(read_curve(at / CURVE_FILE), job.method.ce_budget, job.method.min_well_formed, job.iti.alpha)
        rows.append({"tokens_seen": tokens, "probe_best_accuracy": probed["probe_best_accuracy"],
                     "probe_mean_accuracy": probed["probe_mean_accuracy"],
                     **{k: v for k, v in read.items() if k.endswith(("_drop_at_budget", "_unsteered", "_removed_at_budget"))}})
    (out / DYNAMICS_FILE).write_text(json.dumps(rows, indent=1))
    return {"dynamics_models": len(rows)}


def _summary(job, inputs) -> dict:
    return summary(read_curve(inputs[CURVE] / CURVE_FILE), job.method.ce_budget, job.method.min_well_formed,
                   job.iti.alpha)


def label(job) -> str:
    """ITI's strength (the fixed alpha the run's full evaluation steers at), marked as a curve's."""
    return f"{iti.label(job)} curve"


def validate(job) -> None:
    iti.validate(job)
    alphas = list(job.method.alphas)
    if len(alphas) < 2 or alphas[0] != 0 or any(b <= a for a, b in zip(alphas, alphas[1:])):
        raise ConfigError(f"method.alphas={alphas}: needs 0 first, then at least one larger strength, increasing")
    if not job.iti.alpha <= alphas[-1]:
        raise ConfigError(f"iti.alpha={job.iti.alpha:g} (the curve's fixed strength) lies beyond "
                          f"method.alphas (up to {alphas[-1]:g}): set iti.alpha within them")


register(Method(NAME, IticurveOptions, extend=extend, label=label, params=iti.params, validate=validate))
