"""The jobs the launcher runs, each inside its MLflow run: a study job (one point of the sweep) and
the toy superposition curve. Plain functions of a `JobConfig`, usable without Hydra."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from detox import costs, pipeline, search
from detox.core import contract
from detox.core.artifacts import STAGE
from detox.core.cache import StageCache, stable_key
from detox.core.methods import MethodOptions
from detox.core.ranks import check_slurm_tasks, process_rank
from detox.core.schedule import BatchLayout, warmup_length
from detox.core.schema import ConfigError
from detox.job import JobConfig

if TYPE_CHECKING:
    from detox import tracking


def run(job: JobConfig, resolved_config: str, log=print) -> tuple[str, tracking.Outcome | None]:
    return (run_toy if job.task == "toy" else run_study)(job, resolved_config, log)


def run_study(job: JobConfig, resolved_config: str, log=print) -> tuple[str, tracking.Outcome | None]:
    from detox import (
        tracking,  # MLflow: only for a job that runs (plan mode never imports it)
    )

    if job.stop_after != "data":  # the data phase runs as one CPU task (hydra/launcher=slurm_cpu): no ranks
        check_slurm_tasks(job.trainer)  # before any stage: the tasks SLURM started are the trainer's ranks
    job.scorer.require_version()  # before any stage: a hub classifier scores at a commit, or not at all
    costs.refuse([plan_job("", job)])  # an evaluation over the device's memory, a toxic corpus short for the ratio
    plan = pipeline.study_plan(job)
    cache = StageCache(Path(job.root).resolve() / "cache")
    if job.trainer.require_cached_pretrain:  # a treatment job (phase 2): it never pre-trains
        require_cached_pretrain(job, plan, cache)
    if job.stop_after != "none":  # one phase of a cluster study: its stages, no MLflow run (the whole job records)
        pipeline.run_plan(pipeline.phase_plan(plan, job.stop_after), cache, log)
        log(f"stop_after={job.stop_after}: the stages of this phase are built")
        return "", None
    if process_rank() != 0:  # another rank of a multi-process job: it trains, rank 0 records
        pipeline.run_plan(plan, cache, log)
        return "", None

    def work() -> tracking.Outcome:
        from detox.training.pretrain import load_histories

        result = pipeline.run_plan(plan, cache, log)
        metrics = result.metrics
        if job.search.objective == "matched_cost":  # the same base model unsteered, to price the method
            unsteered = pipeline.run_plan(pipeline.study_plan(replace(job, method=MethodOptions())), cache, log)
            metrics = {**metrics, **search.matched_cost_objective(
                metrics, unsteered.metrics, job.search.metric, job.search.ce_budget, job.search.min_well_formed)}
        elif job.search.objective == "curve_drop":  # the trial's own curve holds its unsteered point
            metrics = {**metrics, **search.curve_drop_objective(metrics, job.search.metric)}
        return tracking.Outcome(
            metrics=metrics, cache_hits=result.cache_hits,
            artifacts=[result.artifacts[stage.name].path / name for stage in plan.stages for name in stage.logged],
            histories={} if job.model.path else load_histories(result.artifacts[STAGE.PRETRAIN].path),  # none: not trained here
        )

    # each stage's spec and code version (detox.core.plan.Stage.version), logged as cfg.<stage>.version
    spec = {stage.name: {**stage.spec, "version": stage.version} for stage in plan.stages}
    key = plan.key
    if job.search.objective != "none":  # a search trial logs more than the study job: its own identity
        spec["search"] = asdict(job.search)
        key = stable_key({"job": plan.key, "search": spec["search"]})
    # One job at a time per identity: a sweep may hold the same job twice (a method that ignores an
    # axis), and two copies running at once would each open an MLflow run.
    locks = cache.root / "jobs"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / f"{key}.lock")):
        run_id, outcome = tracking.track(job, key, spec, pipeline.job_params(job, plan), resolved_config,
                                         pipeline.run_name(job), work, log)
    if outcome is not None:
        m = outcome.metrics
        if "insult_probability" in m:
            # the target is the rate in the documents this model saw, not the sources' expectation
            log(f"insult probability {m['insult_probability']:.1f} % after hostile prompts (its data "
                f"{m.get(contract.REALISED_INSULT_PROBABILITY, float('nan')):.1f} %), {m['insult_probability_neutral']:.1f} % "
                f"after neutral ones; well-formed {m['well_formed']:.1f} %")
        log(f"ToxiGen {m['toxigen']:.1f} %, "
            f"RTP toxicity probability {m['rtp_toxicity_probability']:.1f} %, CE loss {m['ce_loss']:.3f}"
            + (f" (hostile contexts {m['ce_hostile']:.3f})" if "ce_hostile" in m else ""))
        if "search_objective" in m:
            log(f"search objective {m['search_objective']:.2f} ({job.search.metric} "
                f"{m['search_unsteered'] - m['search_drop']:.1f} % against "
                f"{m['search_unsteered']:.1f} % unsteered; CE cost {m['search_ce_cost']:+.4f} nats, "
                f"{'within' if m['search_feasible'] else 'beyond'} the budget of {job.search.ce_budget:g})")
    return run_id, outcome


def require_cached_pretrain(job: JobConfig, plan, cache: StageCache) -> None:
    """With trainer.require_cached_pretrain, one ConfigError line before any stage when a model the job
    would pre-train (a distributed stage: the base model, or MEDA's and INST's own) is not in the
    cache, naming it and the phase-1 command that builds it (docs/guide/paper-at-scale.md, "Running at scale")."""
    base = pipeline.study_plan(replace(job, method=MethodOptions())).keys()[STAGE.PRETRAIN]
    keys = plan.keys()
    needed = [(stage.name, keys[stage.name]) for stage in plan.stages if stage.distributed]
    if job.search.objective == "matched_cost":  # it also evaluates the base model unsteered
        needed.append((STAGE.PRETRAIN, base))
    for name, key in needed:
        if not cache.path(name, key).is_dir():
            point = f"ratio={job.ratio:g} seed={job.seed} method={'none' if key == base else job.method.name}"
            raise ConfigError(f"trainer.require_cached_pretrain=true but the pre-trained model of {point} ({name} key "
                              f"{key}) is not in {cache.root}: pre-train it first (phase 1): python launch.py -m "
                              f"hydra/launcher=slurm {point} with this job's data, model and trainer overrides")


def run_toy(job: JobConfig, resolved_config: str, log=print) -> tuple[str, tracking.Outcome | None]:
    from detox import tracking
    from detox.toy.plot import plot_toy_curve
    from detox.toy.sweep import run_toy_curve
    from detox.toy.table import summary_table

    out = Path(job.root).resolve() / "toy"
    out.mkdir(parents=True, exist_ok=True)

    def work() -> tracking.Outcome:
        result = run_toy_curve(job.toy)
        plot = out / "toy_entanglement.png"
        plot_toy_curve(result, plot)
        rows = out / "toy_runs.jsonl"
        rows.write_text("".join(json.dumps(asdict(r)) + "\n" for r in result.rows))
        log("\n" + summary_table(result))
        log(f"toy curve: {plot}")
        return tracking.Outcome(metrics=result.summary, artifacts=[plot, rows])

    spec = {"task": "toy", "toy": asdict(job.toy)}
    return tracking.track(job, stable_key(spec), spec, {"task": "toy"}, resolved_config, "toy", work, log)


# ---------------------------------------------------------------- plan mode: what a command would do

@dataclass
class Training:
    """What one pre-training of a job implies (an estimate from the config: the packed mixture's exact
    size, annotations included, is known only once it is built)."""

    tokens: int  # tokens in the mixture: data.clean_tokens plus the ratio's toxic tokens
    epochs: float
    steps: int  # optimiser steps, as the pretrain stage counts them
    layout: BatchLayout  # how a step's global batch is cut up, as the pretrain stage cuts it
    warmup_steps: int

    @property
    def global_batch_tokens(self) -> int:
        return self.layout.global_sequences * self.layout.seq_len

    @property
    def tokens_seen(self) -> int:
        return self.steps * self.global_batch_tokens


def training(job: JobConfig) -> Training:
    """The tokens, optimiser steps and batch layout one pre-training of `job` implies."""
    from detox.data.packing import toxic_tokens_for

    t, seq_len = job.trainer, job.data.seq_len
    tokens = job.data.clean_tokens + round(toxic_tokens_for(job.data.clean_tokens, job.ratio))
    layout = BatchLayout.of(t, seq_len)
    steps = layout.steps((tokens - 1) // seq_len, t.epochs)  # windows of seq_len + 1 tokens
    warmup = warmup_length(t.warmup_steps, t.warmup_fraction, steps)
    return Training(tokens, t.epochs, steps, layout, warmup)


@dataclass
class PlannedStage:
    name: str
    key: str
    cached: bool  # its artifact is in the cache: the job would re-use it
    distributed: bool  # a pre-training (every rank takes part)


@dataclass
class PlannedJob:
    label: str  # the job's overrides, as the sweep gives them
    job: JobConfig
    stages: list[PlannedStage]
    training: Training | None  # None for the toy task
    scoring: costs.Scoring | None = None  # None for the toy task

    @property
    def blocked(self) -> bool:
        """With trainer.require_cached_pretrain, the job would stop: a model it pre-trains is not cached."""
        return self.job.trainer.require_cached_pretrain and any(s.distributed and not s.cached for s in self.stages)


def plan_job(label: str, job: JobConfig) -> PlannedJob:
    """The stages `job` would run, each found in the cache or to build; nothing is built or opened."""
    if job.task == "toy":
        return PlannedJob(label, job, [], None)
    plan = pipeline.study_plan(job)
    cache = StageCache(Path(job.root).resolve() / "cache")
    keys = plan.keys()
    stages = [PlannedStage(s.name, keys[s.name], cache.path(s.name, keys[s.name]).is_dir(), s.distributed)
              for s in pipeline.phase_plan(plan, job.stop_after).stages]
    return PlannedJob(label, job, stages, training(job), costs.scoring(job))


def describe_plan(planned: list[PlannedJob]) -> list[str]:
    """Plan mode's report: a line per job (its stages, cached or to build), then per distinct stage how
    many are cached, and what each distinct pre-training implies: tokens per GPU per step, optimiser
    steps, tokens per base model."""
    lines = []
    width = len(str(len(planned)))
    for i, p in enumerate(planned, 1):
        if p.job.task == "toy":
            toy = p.job.toy
            lines.append(f"job {i:>{width}}/{len(planned)} {p.label or '(defaults)'}: task=toy, {len(toy.shares)} shares "
                         f"x {len(toy.seeds)} seeds of the toy model, no stages")
            continue
        stages = ", ".join(f"{s.name} {'cached' if s.cached else 'to build'}" for s in p.stages)
        note = ("; trainer.require_cached_pretrain: this job would stop (pre-train it first: phase 1)"
                if p.blocked else "")
        lines.append(f"job {i:>{width}}/{len(planned)} {p.label or '(defaults)'}: {stages}{note}")
    distinct = {(s.name, s.key): s for p in planned for s in p.stages}
    if distinct:
        counts = Counter(name for name, _ in distinct)
        cached = Counter(name for (name, _), s in distinct.items() if s.cached)
        lines.append(f"{len(planned)} jobs; distinct stages: " + ", ".join(
            f"{name} {counts[name]} ({cached[name]} cached)" for name in dict.fromkeys(n for n, _ in distinct)))
    lines += costs.scoring_lines([p for p in planned if p.scoring is not None])
    trainings = {s.key: (p, s) for p in planned for s in p.stages if s.distributed}  # base, MEDA's, INST's models
    if not trainings:
        return lines + costs.cost_lines(planned)
    for layout in dict.fromkeys(_layout(p) for p, _ in trainings.values()):  # one line unless a sweep changes it
        lines.append(layout)
    by_ratio = Counter((p.job.ratio, p.training.tokens, p.training.epochs, p.training.steps, p.training.tokens_seen)
                       for p, _ in trainings.values())
    for (ratio, tokens, epochs, steps, seen), count in sorted(by_ratio.items()):
        lines.append(f"  ratio {ratio:g}: {count} pre-training(s), each {tokens:,} mixture tokens x {epochs:g} epoch(s): "
                     f"{steps:,} optimiser steps, {seen:,} tokens")
    lines.append(f"{len(trainings)} distinct pre-training(s), {sum(not s.cached for _, s in trainings.values())} to "
                 f"build; {sum(p.training.tokens_seen for p, _ in trainings.values()):,} tokens in all")
    short = [p.training for p, _ in trainings.values() if p.training.warmup_steps >= p.training.steps]
    if short:
        lines.append(f"note: {len(short)} pre-training(s) warm up for {short[0].warmup_steps:,} steps, at least their "
                     f"{short[0].steps:,} steps: the learning rate never reaches its peak (trainer.warmup_steps)")
    return lines + costs.cost_lines(planned)


def _layout(p: PlannedJob) -> str:
    t, trainer, layout = p.training, p.job.trainer, p.training.layout
    devices, device = ("GPU(s)", "GPU") if trainer.accelerator == "gpu" else ("CPU process(es)", "process")
    return (f"pre-training: {layout.ranks} {devices} ({trainer.devices} x {trainer.num_nodes} node(s)), global batch "
            f"{t.global_batch_tokens:,} tokens = {layout.global_sequences:,} sequences of {layout.seq_len}, "
            f"{t.global_batch_tokens // layout.ranks:,} tokens per {device} per step (micro-batch "
            f"{layout.micro_batch_size} x {layout.accumulation} accumulation), " + (
                f"{t.warmup_steps:,} warm-up steps" if trainer.warmup_steps else
                f"warm-up {trainer.warmup_fraction * 100:g} % of the steps"))
