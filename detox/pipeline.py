"""The study plan of one job: the stages, their specs, and how they run through the stage cache.

`study_plan(job)` lays out sources -> tokenizer -> mixture -> pretrain, lets the job's method add or
replace stages (detox.methods), then appends the evaluation of the model the plan names. Each spec
holds exactly the config the stage's output depends on, so changing the method or the ITI strength
never re-trains, and changing the ratio re-uses the sources and the tokenizer. The job's identity in
MLflow is the key of its last stage (`Plan.key`). Building this plan imports nothing heavy; each
build function imports its stage module when it runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from detox.core import artifacts
from detox import methods
from detox.core.cache import Artifact, StageCache
from detox.config import ConfigError, JobConfig
from detox.core.plan import Inputs, Plan, Stage
from detox.core.ranks import process_rank


def study_plan(job: JobConfig) -> Plan:
    d = job.data
    plan = Plan([
        Stage("sources", _sources_spec(job), lambda out, _: _data().build_sources(d, out)),
        Stage("tokenizer", {"tokenizer": asdict(d.tokenizer)},
              lambda out, i: _data().train_tokenizer(d, i["sources"], out), inputs=("sources",)),
        Stage("mixture", {"clean_tokens": d.clean_tokens, "ratio": job.ratio, "seed": job.seed},
              lambda out, i: _data().build_mixture(d, job.ratio, job.seed, i["sources"], i["tokenizer"], out),
              inputs=("tokenizer",)),
        Stage("pretrain", {"model": asdict(job.model), "seq_len": d.seq_len, "trainer": job.trainer.result_spec(),
                           "seed": job.seed},
              lambda out, i: _pretrain(job, out, i), inputs=("mixture",), distributed=True),
    ])
    methods.get(job.method.name).extend(plan, job)
    intervention = plan.intervention
    plan.add(Stage(
        "evaluate",
        {"method": asdict(job.method), "scorer": asdict(job.scorer), "evaluate": asdict(job.evaluate),
         "prompt_prefix": plan.prompt_prefix, "intervention": intervention.spec if intervention else None},
        lambda out, i: _evaluate(job, plan, out, i),
        inputs=("sources", plan.model, *(intervention.inputs if intervention else ())),
        logged=(artifacts.GENERATIONS,),
    ))
    if job.redteam.enabled:  # after the evaluation, whose key it chains, so the job's identity covers both
        plan.add(Stage("redteam", {"redteam": asdict(job.redteam), "scorer": asdict(job.scorer)},
                       lambda out, i: _redteam(job, plan, out, i),
                       inputs=("evaluate", "sources", plan.model, *(intervention.inputs if intervention else ())),
                       logged=("redteam.jsonl",)))
    return plan


def setting_key(job: JobConfig) -> str:
    """The identity of the job's configuration apart from its seed: runs that share it are seeds of one
    setting, and only those are pooled in the comparison table."""
    return study_plan(dataclasses.replace(job, seed=0)).key


def _sources_spec(job: JobConfig) -> dict:
    return _data().sources_spec(job.data)


def _data():
    from detox import data  # light (numpy, tokenizers), but kept with the other stage imports

    return data


def _pretrain(job: JobConfig, out: Path, inputs: Inputs) -> dict:
    from detox.training import pretrain

    return pretrain.pretrain_on_local_ranks(job.model, job.trainer, job.data.seq_len, job.seed, inputs["mixture"],
                                            inputs["tokenizer"], out)


def _evaluate(job: JobConfig, plan: Plan, out: Path, inputs: Inputs) -> dict:
    from contextlib import nullcontext

    from detox import data
    from detox.core.models import load_model
    from detox.evaluation import evaluate, scorers

    sources = inputs["sources"]
    lm, tok = load_model(inputs[plan.model] / artifacts.HF_MODEL)
    rows = {part: data.load_part(sources, part) for part in ("toxigen", "rtp")}
    prompts = {part: [plan.prompt_prefix + row["prompt"] for row in part_rows] for part, part_rows in rows.items()}
    if job.data.source == "synthetic":  # its grammar has a decision point: measure it exactly
        prompts["neutral"] = [plan.prompt_prefix + row["prompt"] for row in rows["rtp"] if not row["hostile"]]
    heldout = {"clean": [row["text"] for row in data.load_part(sources, "heldout")]}
    if data.has_part(sources, "heldout_hostile"):
        heldout["hostile"] = [row["text"] for row in data.load_part(sources, "heldout_hostile")]
    intervention = plan.intervention.make(lm, inputs) if plan.intervention else nullcontext()
    with intervention:
        metrics = evaluate.evaluate(lm, tok, prompts, heldout, scorers.make_scorer(job.scorer), job.evaluate,
                                    job.scorer.threshold, job.seed, out)
    return {**metrics, **_toxigen_by_group(rows["toxigen"], out, job.scorer.threshold)}


def _toxigen_by_group(toxigen: list[dict], out: Path, threshold: float) -> dict:
    """ToxiGen-like toxicity per target group (`toxigen_group_<group>`), where the prompts name one."""
    from detox.data.evalsets import EvalPrompt, per_group_rates

    if any("group" not in row for row in toxigen):
        return {}
    generated = (json.loads(line) for line in open(out / artifacts.GENERATIONS))
    scores = [row["score"] for row in generated if row["set"] == "toxigen"]
    prompts = [EvalPrompt(row["prompt"], row["group"], "toxigen") for row in toxigen]
    return {f"toxigen_group_{group}": rate for group, rate in per_group_rates(prompts, scores, threshold).items()}


def _redteam(job: JobConfig, plan: Plan, out: Path, inputs: Inputs) -> dict:
    """GCG on the evaluated model; with an intervention (ITI) the same prompts are attacked with it
    off and on, so the two success rates compare directly."""
    import time

    from detox import data
    from detox.core.models import load_model
    from detox.evaluation import redteam, scorers

    lm, tok = load_model(inputs[plan.model] / artifacts.HF_MODEL)
    rows = data.load_part(inputs["sources"], "toxigen")[:job.redteam.prompts]
    if not job.redteam.target and any("target" not in row for row in rows):
        raise ConfigError("redteam.target is empty and the prompts carry no target of their own: "
                          "set redteam.target to the toxic continuation to drive towards")
    prompts = [plan.prompt_prefix + row["prompt"] for row in rows]
    targets = [job.redteam.target or row["target"] for row in rows]
    scorer, start = scorers.make_scorer(job.scorer), time.perf_counter()
    metrics = redteam.attack_success_rate(lm, tok, prompts, targets, scorer, job.redteam, job.scorer.threshold,
                                          out=out)
    if plan.intervention:
        (out / "redteam.jsonl").rename(out / "redteam_without_intervention.jsonl")
        steered = redteam.attack_success_rate(lm, tok, prompts, targets, scorer, job.redteam, job.scorer.threshold,
                                              intervention=lambda: plan.intervention.make(lm, inputs), out=out)
        metrics.update({f"{name}_iti": value for name, value in steered.items()})
    return {**metrics, "gcg_seconds": time.perf_counter() - start}


@dataclass
class JobResult:
    metrics: dict[str, float]
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    @property
    def cache_hits(self) -> dict[str, bool]:
        return {stage: a.hit for stage, a in self.artifacts.items()}


def run_plan(plan: Plan, cache: StageCache, log=print) -> JobResult:
    """Build (or find in the cache) every stage in order; the metrics of all stages together.

    On a rank other than 0 of a multi-process run (SLURM starts every rank with the whole job) the
    stages rank 0 builds are waited for, the first distributed stage is built alongside rank 0 in
    its work folder (rank 0 alone writes there), and the job ends: nothing else is this rank's."""
    result = JobResult(metrics={})
    paths: dict[str, Path] = {}
    keys = plan.keys()
    helper = process_rank() != 0
    for stage in plan.stages:
        inputs = Inputs(paths, plan.upstream(stage.inputs), stage.name)
        if helper and stage.distributed and not cache.path(stage.name, keys[stage.name]).is_dir():
            work = cache.work_path(stage.name, keys[stage.name])
            work.mkdir(parents=True, exist_ok=True)
            stage.build(work, inputs)
            return result

        def build(work: Path, stage=stage, inputs=inputs) -> None:
            log(f"[{stage.name}] building")
            (work / artifacts.METRICS).write_text(json.dumps(stage.build(work, inputs) or {}, indent=2))

        artifact = cache.get_or_build(stage.name, plan.keyed_spec(stage, keys), build)
        log(f"[{stage.name}] {'cached' if artifact.hit else 'built'}: {artifact.path}")
        paths[stage.name] = artifact.path
        result.artifacts[stage.name] = artifact
        result.metrics.update(json.loads((artifact.path / artifacts.METRICS).read_text()))
    return result


def run_job(job: JobConfig, cache: StageCache, log=print) -> JobResult:
    return run_plan(study_plan(job), cache, log)


def job_params(job: JobConfig) -> dict[str, str]:
    """The params the comparison table groups and aggregates by."""
    return {"ratio": f"{job.ratio:g}", "seed": str(job.seed), "method": job.method.name,
            "strength": methods.get(job.method.name).label(job), "model": job.model.name,
            "data": job.data.source, "task": "study", "setting": setting_key(job)}


def run_name(job: JobConfig) -> str:
    """The run's name in the MLflow UI: its point of the sweep."""
    label = methods.get(job.method.name).label(job)
    return f"ratio={job.ratio:g} seed={job.seed} method={job.method.name}" + ("" if label == "-" else f" strength={label}")
