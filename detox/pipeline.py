"""One job of the study, stage by stage, through the stage cache.

Each stage's cache spec holds exactly the config it depends on plus the keys of the artifacts it
reads, so changing the method or the ITI strength never re-trains, and changing the ratio re-uses the
sources and the tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from detox import data, evaluate, pretrain, scorers
from detox.cache import Artifact, StageCache
from detox.config import JobConfig

@dataclass
class JobResult:
    metrics: dict[str, float]
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    @property
    def cache_hits(self) -> dict[str, bool]:
        return {stage: a.hit for stage, a in self.artifacts.items()}


def run_job(job: JobConfig, cache: StageCache, log=print) -> JobResult:
    result = JobResult(metrics={})

    def stage(name: str, spec: dict, build) -> Artifact:
        def build_and_record(work: Path) -> None:
            (work / "metrics.json").write_text(json.dumps(build(work) or {}, indent=2))

        artifact = cache.get_or_build(name, spec, build_and_record)
        log(f"[{name}] {'cached' if artifact.hit else 'built'}: {artifact.path}")
        result.artifacts[name] = artifact
        result.metrics.update(json.loads((artifact.path / "metrics.json").read_text()))
        return artifact

    d = job.data
    sources = stage("sources", data.sources_spec(d), lambda out: data.build_sources(d, out))
    tokenizer = stage("tokenizer", {"sources": sources.key, "tokenizer": asdict(d.tokenizer)},
                      lambda out: data.train_tokenizer(d, sources.path, out))
    mixture = stage("mixture", {"tokenizer": tokenizer.key, "clean_tokens": d.clean_tokens, "ratio": job.ratio,
                                "seed": job.seed},
                    lambda out: data.build_mixture(d, job.ratio, job.seed, sources.path, tokenizer.path, out))
    model = stage("pretrain", {"mixture": mixture.key, "model": asdict(job.model), "seq_len": d.seq_len,
                               "trainer": training_spec(job), "seed": job.seed},
                  lambda out: pretrain.pretrain(job.model, job.trainer, d.seq_len, job.seed, mixture.path,
                                                tokenizer.path, out))

    def run_evaluation(out: Path) -> dict:
        lm, tok = evaluate.load_model(model.path / "hf")
        prompts = {part: [row["prompt"] for row in data.load_part(sources.path, part)] for part in ("toxigen", "rtp")}
        heldout = [row["text"] for row in data.load_part(sources.path, "heldout")]
        return evaluate.evaluate(lm, tok, prompts, heldout, scorers.make_scorer(job.scorer), job.evaluate,
                                 job.scorer.threshold, job.seed, out)

    stage("evaluate", {"model": model.key, "method": asdict(job.method), "scorer": asdict(job.scorer),
                       "evaluate": asdict(job.evaluate)}, run_evaluation)
    return result


def training_spec(job: JobConfig) -> dict:
    """The trainer settings that change the trained weights (thread count and checkpoint spacing do not)."""
    spec = asdict(job.trainer)
    del spec["num_threads"], spec["checkpoint_every"]
    return spec


def job_spec(job: JobConfig) -> dict:
    """Everything that determines a study job's result: its identity in MLflow."""
    spec = {"ratio": job.ratio, "seed": job.seed, "data": asdict(job.data), "model": asdict(job.model),
            "trainer": training_spec(job), "method": asdict(job.method), "scorer": asdict(job.scorer),
            "evaluate": asdict(job.evaluate)}
    if uses_iti(job):
        spec["iti"] = asdict(job.iti)
    return spec


def uses_iti(job: JobConfig) -> bool:
    return job.method.name == "iti"


def job_params(job: JobConfig) -> dict[str, str]:
    """The params the comparison table groups and aggregates by."""
    return {"ratio": f"{job.ratio:g}", "seed": str(job.seed), "method": job.method.name,
            "strength": job.iti.strength if uses_iti(job) else "-", "model": job.model.name,
            "data": job.data.source, "task": "study"}


def run_name(job: JobConfig) -> str:
    """The run's name in the MLflow UI: its point of the sweep."""
    strength = f" iti={job.iti.strength}" if uses_iti(job) else ""
    return f"ratio={job.ratio:g} seed={job.seed} method={job.method.name}{strength}"
