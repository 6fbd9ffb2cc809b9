"""The jobs the launcher runs, each inside its MLflow run: a study job (one point of the sweep) and
the toy superposition curve. Plain functions of a `JobConfig`, usable without Hydra."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from filelock import FileLock

from detox import pipeline, search, tracking
from detox.core.artifacts import STAGE
from detox.core.cache import StageCache, stable_key
from detox.config import ConfigError, JobConfig
from detox.methods import MethodOptions
from detox.core.ranks import check_slurm_tasks, process_rank


def run(job: JobConfig, resolved_config: str, log=print) -> tuple[str, tracking.Outcome | None]:
    return (run_toy if job.task == "toy" else run_study)(job, resolved_config, log)


def run_study(job: JobConfig, resolved_config: str, log=print) -> tuple[str, tracking.Outcome | None]:
    check_slurm_tasks(job.trainer)  # before any stage: the tasks SLURM started are the trainer's ranks
    plan = pipeline.study_plan(job)
    cache = StageCache(Path(job.root).resolve() / "cache")
    if job.trainer.require_cached_pretrain:  # a treatment job (phase 2): it never pre-trains
        require_cached_pretrain(job, plan, cache)
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
        return tracking.Outcome(
            metrics=metrics, cache_hits=result.cache_hits,
            artifacts=[result.artifacts[stage.name].path / name for stage in plan.stages for name in stage.logged],
            histories=load_histories(result.artifacts[STAGE.PRETRAIN].path),
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
            log(f"insult probability {m['insult_probability']:.1f} % after hostile prompts (data-implied "
                f"{m.get('implied_toxigen_sampled', float('nan')):.1f} %), {m['insult_probability_neutral']:.1f} % "
                f"after neutral ones; well-formed {m['well_formed']:.1f} %")
        log(f"ToxiGen {m['toxigen']:.1f} % (data-implied {m.get('implied_toxigen', float('nan')):.1f} %), "
            f"RTP toxicity probability {m['rtp_toxicity_probability']:.1f} %, CE loss {m['ce_loss']:.3f}"
            + (f" (hostile contexts {m['ce_hostile']:.3f})" if "ce_hostile" in m else ""))
        if "search_objective" in m:
            log(f"search objective {m['search_objective']:.2f} ({job.search.metric} {m[job.search.metric]:.1f} % against "
                f"{m['search_unsteered']:.1f} % unsteered; CE cost {m['search_ce_cost']:+.4f} nats, "
                f"{'within' if m['search_feasible'] else 'beyond'} the budget of {job.search.ce_budget:g})")
    return run_id, outcome


def require_cached_pretrain(job: JobConfig, plan, cache: StageCache) -> None:
    """With trainer.require_cached_pretrain, one ConfigError line before any stage when a model the job
    would pre-train (a distributed stage: the base model, or MEDA's and INST's own) is not in the
    cache, naming it and the phase-1 command that builds it (README "Running at scale")."""
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
