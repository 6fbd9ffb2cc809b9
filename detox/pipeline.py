"""The study plan of one job: the stages, their specs, and how they run through the stage cache.

`study_plan(job)` lays out sources -> tokenizer -> mixture -> pretrain, lets the job's method add or
replace stages (detox.core.methods: each method's own hooks), then appends the evaluation of the model the plan names. Each spec
holds exactly the config the stage's output depends on, so changing the method or the ITI strength
never re-trains, and changing the ratio re-uses the sources and the tokenizer. The job's identity in
MLflow is the key of its last stage (`Plan.key`). Building this plan imports nothing heavy; each
build function imports its stage module when it runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from detox.core import artifacts, contract, methods
from detox.core.artifacts import STAGE
from detox.core.cache import Artifact, StageCache
from detox.core.plan import Inputs, Plan, Stage
from detox.core.ranks import process_rank
from detox.core.schema import ConfigError
from detox.core.tamper import TAMPER_FILE, tamper_metrics
from detox.data.sources import source_kind
from detox.job import JobConfig


def study_plan(job: JobConfig) -> Plan:
    plan = Plan(base_model_stages(job))
    methods.get(job.method.name).extend(plan, job)
    intervention = plan.intervention
    plan.add(Stage(
        STAGE.EVALUATE,
        {"method": asdict(job.method), "scorer": job.scorer.result_spec(), "evaluate": asdict(job.evaluate),
         "prompt_prefix": plan.prompt_prefix, "intervention": intervention.spec if intervention else None},
        lambda out, i: _evaluate(job, plan, out, i),
        inputs=(STAGE.SOURCES, plan.model, *(intervention.inputs if intervention else ())),
        logged=(artifacts.GENERATIONS,),
        # 2: the mean score x 100 beside each share, ToxiGen continuations cut at their first line break;
        # 3: batches bounded by tokens (the samples drawn change with them), CE in windows of data.seq_len
        version=3,
    ))
    if job.redteam.enabled:  # after the evaluation, whose key it chains, so the job's identity covers both
        plan.add(Stage(STAGE.REDTEAM, {"redteam": asdict(job.redteam), "scorer": job.scorer.result_spec()},
                       lambda out, i: _redteam(job, plan, out, i),
                       inputs=(STAGE.EVALUATE, STAGE.SOURCES, plan.model, *(intervention.inputs if intervention else ())),
                       logged=("redteam.jsonl",)))
    if job.tamper.enabled:  # after the evaluation (and red-teaming), whose key it chains
        plan.add(Stage(STAGE.TAMPER, {"tamper": asdict(job.tamper), "world": asdict(job.data.world),
                                      "scorer": job.scorer.result_spec(), "evaluate": asdict(job.evaluate),
                                      "seed": job.seed, "prompt_prefix": plan.prompt_prefix},
                       lambda out, i: _tamper(job, plan, out, i),
                       inputs=(plan.stages[-1].name, STAGE.SOURCES, plan.model,
                               *(intervention.inputs if intervention else ())),
                       logged=(TAMPER_FILE,)))
    if job.capability.tasks:
        add_capability_stages(plan, job)
    return plan


def base_model_stages(job: JobConfig) -> list[Stage]:
    """The stages up to the base model (STAGE.PRETRAIN): pre-training one (sources -> tokenizer -> mixture
    -> pretrain), or, with `model.path`, the sources and a stage that records an existing model (a link to
    it, or to its hub snapshot), keyed by its identity: the content of a local folder's files or the commit
    a hub revision resolves to (detox.core.families.pretrained_identity)."""
    d = job.data
    kind = source_kind(d)
    sources = Stage(STAGE.SOURCES, kind.spec(), lambda out, _: kind.build(out),
                    logged=kind.logged)  # e.g. the commits the hub corpora resolved to
    if job.model.path:
        from detox.core.families import (
            pretrained_identity,  # light: hashes files, asks the hub for a commit
        )

        identity = pretrained_identity(job.model.path, job.model.revision)
        return [sources, Stage(STAGE.PRETRAIN, {"pretrained": identity},
                               lambda out, _: _models().record_pretrained(job.model.path, identity, out))]
    tokenizer = Stage(STAGE.TOKENIZER, {"tokenizer": asdict(d.tokenizer)},
                      lambda out, i: _data().train_tokenizer(d, i[STAGE.SOURCES], out), inputs=(STAGE.SOURCES,))
    mixture = {"clean_tokens": d.clean_tokens, "ratio": job.ratio, "seed": job.seed}
    if kind.prepared:  # the corpora tokenised once for the whole grid, each mixture a sample of their documents
        data = [Stage(STAGE.PREPARE, {"clean_tokens": d.clean_tokens},
                      lambda out, i: _data().prepare_corpora(d, i[STAGE.SOURCES], i[STAGE.TOKENIZER], out),
                      inputs=(STAGE.TOKENIZER,)),
                Stage(STAGE.MIXTURE, {**mixture, "sample": "prepared"},
                      lambda out, i: _data().sample_prepared_mixture(d, job.ratio, job.seed, i[STAGE.PREPARE], out),
                      inputs=(STAGE.PREPARE,), version=2)]
    else:  # version 2: one streaming packer for every source kind (its order and selection differ from v1's);
        # version 3: the world's regime (hostile contexts, insulting documents) and realised calibration target
        data = [Stage(STAGE.MIXTURE, mixture, lambda out, i: _data().build_mixture(d, job.ratio, job.seed,
                                                                                   i[STAGE.SOURCES], i[STAGE.TOKENIZER], out),
                      inputs=(STAGE.TOKENIZER,), version=3)]
    return [
        sources,
        tokenizer,
        *data,
        # version 2: no weight decay on the embeddings (tied to the output layer), as OLMo-core
        Stage(STAGE.PRETRAIN, {"model": job.model.result_spec(), "seq_len": d.seq_len,
                               "trainer": job.trainer.result_spec(), "seed": job.seed},
              lambda out, i: _pretrain(job, out, i), inputs=(STAGE.MIXTURE,), distributed=True, version=2),
    ]


def setting_key(job: JobConfig) -> str:
    """The identity of the job's configuration apart from its seed: runs that share it are seeds of one
    setting, and only those are pooled in the comparison table."""
    return study_plan(dataclasses.replace(job, seed=0)).key


def add_capability_stages(plan: Plan, job: JobConfig) -> None:
    """lm-evaluation-harness tasks (detox.evaluation.capability) on the base model, one stage shared by every
    treatment of it, and on the treated model as the evaluation saw it (its model, prompt prefix and
    intervention); the second chains the plan's last stage, so the job's identity covers them all."""
    from detox.evaluation.capability import (
        spec,  # light: lm-eval is imported when the stage runs
    )

    last, intervention = plan.stages[-1].name, plan.intervention
    options = {"capability": spec(job.capability)}
    plan.add(Stage(STAGE.CAPABILITY_BASE, options,
                   lambda out, i: _capability(job, None, out, i), inputs=(STAGE.PRETRAIN,)))
    plan.add(Stage(STAGE.CAPABILITY, {**options, "prompt_prefix": plan.prompt_prefix,
                                      "intervention": intervention.spec if intervention else None},
                   lambda out, i: _capability(job, plan, out, i),
                   inputs=(last, STAGE.CAPABILITY_BASE, plan.model, *(intervention.inputs if intervention else ()))))


def _capability(job: JobConfig, plan: Plan | None, out: Path, inputs: Inputs) -> dict:
    """The base model's capability (`plan` None: capability_base_*), or the treated model's (capability_*),
    which is the base model's when the plan treats nothing."""
    from contextlib import nullcontext

    from detox.core.models import load_model
    from detox.evaluation import capability

    if plan is not None and plan.model == STAGE.PRETRAIN and not plan.intervention and not plan.prompt_prefix:
        base = json.loads((inputs[STAGE.CAPABILITY_BASE] / artifacts.METRICS).read_text())
        return {name.replace("capability_base_", "capability_", 1): value for name, value in base.items()}
    lm, tok = load_model(inputs[plan.model if plan else STAGE.PRETRAIN] / artifacts.HF_MODEL)
    with plan.intervention.make(lm, inputs) if plan and plan.intervention else nullcontext():
        return capability.run_tasks(lm, tok, job.capability, job.seed, out,
                                    prefix="capability" if plan else "capability_base",
                                    instruction=plan.prompt_prefix if plan else "")


def _models():
    from detox.core import models

    return models


def _data():
    from detox.data import (
        stages,  # light (numpy, tokenizers), but kept with the other stage imports
    )

    return stages


def _pretrain(job: JobConfig, out: Path, inputs: Inputs) -> dict:
    from detox.training import pretrain

    return pretrain.pretrain_on_local_ranks(job.model, job.trainer, job.data.seq_len, job.seed, inputs[STAGE.MIXTURE],
                                            inputs[STAGE.TOKENIZER], out)


def _evaluate(job: JobConfig, plan: Plan, out: Path, inputs: Inputs) -> dict:
    from contextlib import nullcontext

    from detox.core.models import load_model
    from detox.data.parts import has_part, heldout_texts, load_part
    from detox.evaluation import evaluate, scorers
    from detox.evaluation.prompt_sets import PROMPT_SETS

    sources = inputs[STAGE.SOURCES]
    lm, tok = load_model(inputs[plan.model] / artifacts.HF_MODEL)
    rows = {s.name: load_part(sources, s.part) for s in PROMPT_SETS if has_part(sources, s.part)}
    heldout = heldout_texts(sources)
    scorer = scorers.make_scorer(job.scorer, job.root)
    with plan.intervention.make(lm, inputs) if plan.intervention else nullcontext():
        metrics = evaluate.evaluate(lm, tok, rows, heldout, scorer, job.evaluate,
                                    job.scorer.threshold, job.seed, out, seq_len=job.data.seq_len,
                                    prefix=plan.prompt_prefix)
    return {**metrics, **scorers.scorer_metrics(scorer)}  # e.g. classifier_truncated, perspective_missing


def _redteam(job: JobConfig, plan: Plan, out: Path, inputs: Inputs) -> dict:
    """GCG on the evaluated model; with an intervention (ITI) the same prompts are attacked with it
    off and on, so the two success rates compare directly."""
    import time

    from detox.core.models import load_model
    from detox.data.parts import load_part
    from detox.evaluation import redteam, scorers

    lm, tok = load_model(inputs[plan.model] / artifacts.HF_MODEL)
    rows = load_part(inputs[STAGE.SOURCES], "toxigen")[:job.redteam.prompts]
    if not job.redteam.target and any("target" not in row for row in rows):
        raise ConfigError("redteam.target is empty and the prompts carry no target of their own: "
                          "set redteam.target to the toxic continuation to drive towards")
    prompts = [plan.prompt_prefix + row["prompt"] for row in rows]
    targets = [job.redteam.target or row["target"] for row in rows]
    scorer, start = scorers.make_scorer(job.scorer, job.root), time.perf_counter()
    metrics = redteam.red_team(lm, tok, prompts, targets, scorer, job.redteam, job.scorer.threshold, out,
                               intervention=(lambda: plan.intervention.make(lm, inputs)) if plan.intervention else None)
    return {**metrics, "gcg_seconds": time.perf_counter() - start}


def _tamper(job: JobConfig, plan: Plan, out: Path, inputs: Inputs) -> dict:
    """The fine-tuning attack (detox.training.tamper) on the evaluated model, its intervention on throughout."""
    from contextlib import nullcontext

    from detox.core.models import load_model
    from detox.data.world import attack_documents
    from detox.methods._curve import greedy_measure
    from detox.training.tamper import attack

    lm, tok = load_model(inputs[plan.model] / artifacts.HF_MODEL)
    measure = greedy_measure(job, inputs[STAGE.SOURCES])
    texts = attack_documents(job.data.world, job.tamper.docs, job.seed)

    def at(step: int) -> dict:
        folder = out / f"step_{step:05d}"
        folder.mkdir(exist_ok=True)  # a resumed attack may measure a step again
        return measure(lm, tok, folder, plan.prompt_prefix)

    with plan.intervention.make(lm, inputs) if plan.intervention else nullcontext():
        points = attack(lm, tok, texts, job.tamper, job.seed, out, at)
    (out / TAMPER_FILE).write_text(json.dumps({"points": points}, indent=1))
    return tamper_metrics(points)


@dataclass
class JobResult:
    metrics: dict[str, float]
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    @property
    def cache_hits(self) -> dict[str, bool]:
        return {stage: a.hit for stage, a in self.artifacts.items()}


def phase_plan(plan: Plan, stop_after: str) -> Plan:
    """The stages one phase of a job runs (JobConfig.stop_after): `data`, every stage before the first that
    trains or evaluates (CPU work: the preparation phase); `pretrain`, every stage up to the last pre-training
    (phase 1 on the GPU nodes, so no evaluation holds them); `none`, all. Each keeps its key."""
    stages = plan.stages
    if stop_after == "data":
        end = next((i for i, s in enumerate(stages) if s.distributed or s.name == STAGE.EVALUATE), len(stages))
    elif stop_after == "pretrain":
        end = max((i + 1 for i, s in enumerate(stages) if s.distributed), default=0)
    else:
        end = len(stages)
    return dataclasses.replace(plan, stages=stages[:end])


WAIT_SECONDS = 5  # how often a helper rank looks for a stage rank 0 builds


def run_plan(plan: Plan, cache: StageCache, log=print) -> JobResult:
    """Build (or find in the cache) every stage in order; the metrics of all stages together.

    On a rank other than 0 of a multi-process run (SLURM starts every rank with the whole job) the
    stages rank 0 builds are waited for, the first distributed stage is built alongside rank 0 in
    its work folder (rank 0 alone writes there), and the job ends: nothing else is this rank's. Only rank 0
    builds a stage the ranks share (a helper never takes the stage's lock: file locks may not hold across
    nodes), the others wait for it in the cache."""
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
        if helper and not cache.path(stage.name, keys[stage.name]).is_dir():
            log(f"[{stage.name}] waiting for rank 0 to build it")
            while not cache.path(stage.name, keys[stage.name]).is_dir():
                time.sleep(WAIT_SECONDS)

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


def job_params(job: JobConfig, plan: Plan | None = None) -> dict[str, str]:
    """The params of the contract with the report (detox.core.contract): what it groups, joins and
    filters by. Numbers are written as numbers; the strength label is for display only. `plan`: the
    job's study plan, when the caller has made it already."""
    c, method = contract, methods.get(job.method.name)
    plan = plan or study_plan(job)
    return {c.RATIO: c.number(job.ratio), c.SEED: str(job.seed), c.METHOD: job.method.name,
            c.STRENGTH: method.label(job), c.MODEL: job.model.label, c.DATA: job.data.source, c.TASK: "study",
            c.SETTING: setting_key(job), c.BASE_MODEL: plan.keys()[STAGE.PRETRAIN], c.SCORER: job.scorer.label(),
            **method.params(job)}  # the method's own, e.g. ITI's alpha and direction


def run_name(job: JobConfig) -> str:
    """The run's name in the MLflow UI: its point of the sweep."""
    label = methods.get(job.method.name).label(job)
    point = f"model={job.model.label}" if job.model.path else f"ratio={job.ratio:g}"  # a pre-trained model has no ratio
    return f"{point} seed={job.seed} method={job.method.name}" + ("" if label == "-" else f" strength={label}")
