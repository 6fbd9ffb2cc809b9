"""Plan mode's cost model (`launch.py plan=true`): what each distinct stage of a sweep costs before anything
runs, and what cannot finish, refused in one line before any stage.

Per distinct stage: tokens, disk, wall-hours at the throughputs stated below, the scorer's calls and hours,
the largest tensor of an evaluation against the device's memory (`device_memory_gb`), and the toxic
corpus's tokens (from the prepared store's index, once the prepare stage is built) against what the
sweep's highest ratio needs. The rates are stated figures, not measurements of this machine: replace
them with your own once measured (benchmarks/gpu_check.sh prints the GPU's).

Light: no torch; reads only the job's config, the cache's folders and a prepared store's index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detox.core import methods
from detox.core.artifacts import STAGE
from detox.core.hub import UNRESOLVED
from detox.core.schema import ConfigError
from detox.data.packing import toxic_tokens_for
from detox.evaluation.config import PERSPECTIVE_CLOSES
from detox.evaluation.throughput import classifier_seconds, duration, text_tokens
from detox.job import JobConfig

TOKENIZE_TOKENS_PER_S_PER_CPU = 300_000  # stated: the OLMo tokenizer at 2-3 M tokens/s on 8 CPUs
PREPARE_CPUS = 8  # CPUs a preparation task gets (the SLURM recipe's CPU partition: --cpus-per-task=8)
GPU_TOKENS_PER_S = 35_000  # stated, per H100 for OLMo-1B at 2k: the paper's 16 H100 x 12 h for 20-26 B tokens
COPY_BYTES_PER_S = 500e6  # stated: a mixture drawn from the stores is a copy of their documents
CE_CHUNK_TOKENS = 2048  # detox.evaluation.evaluate.CE_CHUNK_TOKENS (that module imports torch)
OLMO_EMBEDDING = 50_304  # OLMo's tokenizer (50,280 ids) padded, as the model's output layer has it
GB = 1e9


def vocabulary(job: JobConfig) -> int:
    return OLMO_EMBEDDING if job.data.tokenizer.path == "olmo" else job.data.tokenizer.vocab_size


def token_bytes(job: JobConfig) -> int:
    return 2 if vocabulary(job) <= 2**16 else 4


def evaluation_tensors(job: JobConfig) -> dict[str, float]:
    """Bytes of the largest tensors of the job's evaluation (fp32, as the evaluation loads the model), each
    batch bounded by `evaluate.batch_size` x `data.seq_len` tokens (detox.evaluation.evaluate.token_budget)."""
    budget, m, e = job.evaluate.batch_size * job.data.seq_len, job.model, job.evaluate
    new_tokens = min(e.toxigen_max_new_tokens, e.rtp_max_new_tokens)
    return {"MLP activations of a batch": budget * m.d_model * m.mlp_ratio * 4,
            "CE logits of a chunk": CE_CHUNK_TOKENS * vocabulary(job) * 4,
            "generation's next-token logits": budget // (1 + new_tokens) * vocabulary(job) * 4,
            "weights": (12 * m.n_layers * m.d_model ** 2 + vocabulary(job) * m.d_model) * 4}


def scorer_calls(job: JobConfig) -> int:
    """Texts the evaluation sends to the scorer: every ToxiGen continuation and every RTP sample."""
    return scoring(job).texts


@dataclass
class Scoring:
    """What one job has its scorer score (an estimate from the config): the evaluation's continuations per
    prompt set, and the training documents its method has scored (MEDA's and INST's annotation, SFT's filter)."""

    sets: dict[str, tuple[int, int, int]]  # prompt set -> (prompts, samples a prompt, new tokens a continuation)
    documents: int  # training documents the method has the scorer score
    document_tokens: float  # tokens a training document (the source kind's average)

    @property
    def texts(self) -> int:
        return sum(prompts * samples for prompts, samples, _ in self.sets.values())

    @property
    def tokens(self) -> float:
        return sum(text_tokens(prompts * samples, new) for prompts, samples, new in self.sets.values())

    def describe(self) -> str:
        return " + ".join(f"{name} {prompts:,}" + (f" x {samples}" if samples > 1 else "")
                          for name, (prompts, samples, _) in self.sets.items())


def scoring(job: JobConfig) -> Scoring:
    """The texts `job`'s scorer scores: each prompt set's rows x its samples, and its method's documents."""
    from detox.data.sources import source_kind
    from detox.evaluation.prompt_sets import PROMPT_SETS

    kind = source_kind(job.data)
    sets = {spec.name: (kind.prompt_rows(spec.part), spec.samples_per_prompt(job.evaluate), spec.new_tokens(job.evaluate))
            for spec in PROMPT_SETS}
    documents = methods.get(job.method.name).scored_documents(job)
    per_document = job.data.clean_tokens / max(kind.documents_for(job.data.clean_tokens), 1) if documents else 0.0
    return Scoring(sets, documents, per_document)


def toxic_store_tokens(job: JobConfig, prepare_key: str | None) -> int | None:
    """The toxic corpus's tokens from the prepared store's index, or None while it is not prepared."""
    from detox.data.store import store_summary

    if prepare_key is None:
        return None
    summary = store_summary(Path(job.root).resolve() / "cache" / STAGE.PREPARE / prepare_key / "toxic")
    return summary["store_tokens"] if summary else None


def cost_lines(planned: Sequence) -> list[str]:
    """The cost table of the stages of `planned` (detox.jobs.PlannedJob) still to build: per stage, summed over
    its distinct keys (each built once, whichever jobs share it)."""
    seen, rows = set(), {}
    for p in planned:
        for stage in p.stages if p.training is not None else ():
            if (stage.name, stage.key) in seen or stage.cached:
                continue
            seen.add((stage.name, stage.key))
            cost = _stage_cost(p.job, p, stage)
            row = rows.setdefault(stage.name, {"count": 0})
            row["count"] += 1
            for name, value in cost.items():
                if name == "unsaved_hours":
                    continue
                row[name] = max(row.get(name, 0), value) if name in _LARGEST else row.get(name, 0) + value
    lines = ["cost of the stages to build (stated rates in detox/costs.py; each distinct stage once):"]
    for name, row in rows.items():
        parts = [f"{row['count']} x"]
        if row.get("tokens"):
            parts.append(f"{row['tokens'] / GB:,.1f} B tokens")
        if row.get("disk"):
            parts.append(f"{row['disk'] / GB:,.0f} GB disk")
        if row.get("hours"):
            parts.append(f"{row['hours']:,.1f} h" + (f" on {row['ranks']:g} GPUs each job, {row['gpu_hours']:,.0f} "
                                                     f"GPU-hours" if row.get("gpu_hours") else f" on {PREPARE_CPUS} CPUs"
                                                     if name != STAGE.EVALUATE else ""))
        if row.get("calls"):
            parts.append(f"{row['calls']:,.0f} scorer calls" + (f", {duration(row['scorer_hours'] * 3600)} at the "
                                                                "scorer's rate" if row.get("scorer_hours") else ""))
        if row.get("largest"):
            parts.append(f"largest evaluation tensor {row['largest'] / GB:.2f} GB + weights {row['weights'] / GB:.1f} GB "
                         f"of {row['device']:g} GB device memory")
        lines.append(f"  {name:<9} " + ", ".join(parts))
    if not rows:
        lines.append("  nothing to build")
    return lines + _budget_lines(planned)


_LARGEST = ("largest", "weights", "device", "ranks")  # taken as the largest over the stages, not summed


def _point(job: JobConfig) -> str:
    return f"ratio {job.ratio:g} seed {job.seed} method {job.method.name}"


def _stage_cost(job: JobConfig, p, stage) -> dict[str, float]:
    """One stage's tokens, disk bytes, wall-hours (GPU-hours), scorer calls (and hours), largest tensor."""
    t = p.training
    tokenise = TOKENIZE_TOKENS_PER_S_PER_CPU * PREPARE_CPUS
    if stage.name == STAGE.PREPARE:  # at least the clean prefix and ratio 25's toxic tokens (the whole toxic corpus)
        tokens = job.data.clean_tokens + toxic_tokens_for(job.data.clean_tokens, 25)
        hours = tokens / tokenise / 3600
        return {"tokens": tokens, "disk": tokens * token_bytes(job), "hours": hours, "unsaved_hours": hours}
    if stage.name == STAGE.MIXTURE:
        disk = t.tokens * token_bytes(job)
        drawn = any(s.name == STAGE.PREPARE for s in p.stages)  # a copy from the stores, else tokenised again
        hours = disk / COPY_BYTES_PER_S / 3600 if drawn else t.tokens / tokenise / 3600
        return {"tokens": t.tokens, "disk": disk, "hours": hours, "unsaved_hours": hours}
    if stage.distributed:
        m, ranks = job.model, t.layout.ranks
        checkpoint = 16 * (12 * m.n_layers * m.d_model ** 2 + vocabulary(job) * m.d_model)  # weights + AdamW, fp32
        cost = {"tokens": t.tokens_seen, "disk": checkpoint}
        if job.trainer.accelerator == "gpu":
            hours = t.tokens_seen / (GPU_TOKENS_PER_S * ranks) / 3600
            cost.update(hours=hours, gpu_hours=hours * ranks, ranks=ranks,
                        unsaved_hours=min(hours, checkpoint_hours(job, hours / max(t.steps, 1))))
        return cost
    if stage.name == STAGE.EVALUATE:
        calls, tensors = scorer_calls(job), evaluation_tensors(job)
        cost = {"calls": calls, "largest": max(v for n, v in tensors.items() if n != "weights"),
                "weights": tensors["weights"], "device": job.device_memory_gb}
        if job.scorer.name == "perspective":
            cost["scorer_hours"] = calls / job.scorer.qps / 3600
            # with scorer.cache a requeued evaluation asks only the texts not yet scored
            cost["unsaved_hours"] = 0 if job.scorer.cache else cost["scorer_hours"]
        elif job.scorer.name == "classifier":  # on one GPU, an estimate (detox.evaluation.throughput)
            cost["scorer_hours"] = classifier_seconds(scoring(job).tokens, "gpu") / 3600
        return cost
    return {}


def checkpoint_hours(job: JobConfig, step_hours: float) -> float:
    """Hours between two of a pre-training's checkpoints: every trainer.checkpoint_every steps, or sooner every
    trainer.checkpoint_minutes."""
    every = job.trainer.checkpoint_every * step_hours
    return min(every, job.trainer.checkpoint_minutes / 60) if job.trainer.checkpoint_minutes else every


def _budget_lines(planned: Sequence) -> list[str]:
    """The toxic corpus against what the sweep's highest ratio needs, per prepared corpus."""
    lines = []
    for job, key in _prepared(planned).values():
        top = max(p.job.ratio for p in planned if p.training is not None)
        needed = toxic_tokens_for(job.data.clean_tokens, max(top, 25))
        have = toxic_store_tokens(job, key)
        lines.append(f"toxic budget: ratio {max(top, 25):g} needs {needed / GB:.2f} B toxic tokens; the toxic corpus "
                     + (f"holds {have / GB:.2f} B (prepared store {key[:8]})" if have is not None else
                        "is not counted yet (its prepare stage counts it: run the preparation phase first)"))
    return lines


def _prepared(planned: Sequence) -> dict:
    return {s.key: (p.job, s.key) for p in planned if p.training is not None for s in p.stages
            if s.name == STAGE.PREPARE}


def refuse(planned: Sequence, time_limit_min: float | None = None) -> None:
    """One ConfigError line for the first thing of the sweep that cannot finish: an evaluation whose tensors do
    not fit the device's memory, a ratio the prepared toxic corpus cannot fill (data.corpora.on_short=error),
    or, under a launcher's time limit (`time_limit_min`: SLURM's timeout_min), a stage to build that runs
    longer than the limit without saving its progress (preparation and packing restart from nothing; a
    pre-training keeps its last checkpoint), so that every requeue would start it over."""
    if time_limit_min is not None:
        _refuse_over_time_limit(planned, time_limit_min / 60)
    for p in planned:
        if p.training is None or not any(s.name == STAGE.EVALUATE for s in p.stages):
            continue
        job, tensors = p.job, evaluation_tensors(p.job)
        need = sum(sorted(tensors.values())[-2:])  # the weights and the largest tensor at once
        if job.trainer.accelerator == "gpu" and need > job.device_memory_gb * GB:
            name = max((n for n in tensors if n != "weights"), key=tensors.get)
            raise ConfigError(f"evaluation of {_point(job)}: its {name} take {tensors[name] / GB:,.1f} GB beside "
                              f"{tensors['weights'] / GB:.1f} GB of weights, over device_memory_gb="
                              f"{job.device_memory_gb:g}: lower evaluate.batch_size (x data.seq_len = tokens a batch)")
    prepared = _prepared(planned)
    for p in planned:
        job = p.job
        key = next((s.key for s in p.stages if s.name == STAGE.PREPARE), None)
        have = toxic_store_tokens(job, key) if key in prepared else None
        needed = toxic_tokens_for(job.data.clean_tokens, job.ratio)
        if have is not None and have < needed and job.data.corpora.on_short == "error":
            raise ConfigError(f"ratio {job.ratio:g} needs {needed:,.0f} toxic tokens; the prepared toxic corpus "
                              f"(data.corpora.toxic) holds {have:,}: enlarge it, lower the ratio or data.clean_tokens, "
                              f"or set data.corpora.on_short=repeat")


def _refuse_over_time_limit(planned: Sequence, limit_hours: float) -> None:
    for p in planned:
        for stage in p.stages if p.training is not None else ():
            unsaved = 0 if stage.cached else _stage_cost(p.job, p, stage).get("unsaved_hours", 0)
            if unsaved > limit_hours:
                fix = ("lower trainer.checkpoint_every or set trainer.checkpoint_minutes" if stage.distributed else
                       "build it first in a phase with a longer limit (docs/guide/paper-at-scale.md: preparation)")
                raise ConfigError(f"stage {stage.name} of {_point(p.job)} runs {unsaved:,.1f} h without saving its "
                                  f"progress, over the launcher's time limit of {limit_hours:g} h "
                                  f"(hydra.launcher.timeout_min): every requeue would start it over; {fix}")


def scoring_lines(planned: Sequence) -> list[str]:
    """Per scorer of the planned jobs (detox.jobs.PlannedJob): which scorer at which version, what a job's evaluation scores and
    how long that takes (a classifier on one GPU and on a CPU, against Perspective at its rate), the
    evaluations to build, and the training documents scored for MEDA, INST or SFT."""
    lines = []
    for label in dict.fromkeys(p.job.scorer.label() for p in planned):
        jobs = [p for p in planned if p.job.scorer.label() == label]
        scorer, first = jobs[0].job.scorer, jobs[0].scoring
        lines.append(f"scorer: {label}{_scorer_note(scorer)}")
        builds = {s.key: p.scoring for p in jobs for s in p.stages if s.name == STAGE.EVALUATE and not s.cached}
        texts = sum(s.texts for s in builds.values())
        documents = max(p.scoring.documents for p in jobs)  # the same clean stream: each document scored once
        line = f"  scoring a job's evaluation: {first.texts:,} texts ({first.describe()})"
        if scorer.name == "perspective":
            lines.append(f"{line}: {first.texts:,} requests, {duration(first.texts / scorer.qps)} at {scorer.qps:g} QPS")
            lines.append(f"  {len(builds)} evaluation(s) to build: {texts:,} requests, "
                         f"{duration(texts / scorer.qps)} at {scorer.qps:g} QPS")
            if documents:
                lines.append(f"  training documents scored (SFT's filter): at least {documents:,} requests, "
                             f"{duration(documents / scorer.qps)}")
            continue
        if scorer.name == "classifier":
            gpu, cpu = (classifier_seconds(first.tokens, device) for device in ("gpu", "cpu"))
            line += (f": about {duration(gpu)} on one GPU (estimated), {duration(cpu)} on 2 CPU cores (measured); "
                     f"Perspective at 1 QPS: {duration(first.texts)}")
        lines.append(line)
        if len(jobs) > 1 or len(builds) != 1:
            lines.append(f"  {len(builds)} evaluation(s) to build: {texts:,} texts" + (
                f", about {duration(classifier_seconds(sum(s.tokens for s in builds.values()), 'gpu'))} on one GPU"
                if scorer.name == "classifier" else ""))
        if documents and scorer.name == "classifier":
            tokens = text_tokens(documents, max(p.scoring.document_tokens for p in jobs))
            lines.append(f"  training documents scored (MEDA/INST annotation, SFT's filter): about {documents:,}, each "
                         f"once per root (cached by text), about {duration(classifier_seconds(tokens, 'gpu'))} on one "
                         f"GPU (estimated); Perspective at 1 QPS: {duration(documents)}")
    return lines


def _scorer_note(scorer) -> str:
    """What a plan says beside the scorer's label: its full identity, or why the job would stop."""
    if scorer.name == "perspective":
        return f" (the Perspective API closes on {PERSPECTIVE_CLOSES}; its model is unversioned)"
    if scorer.name != "classifier":
        return ""
    identity = scorer.identity()
    if "files" in identity:
        return f" (local folder {scorer.model}, files sha256 {identity['files']})"
    if identity["commit"] == UNRESOLVED:
        return (f": its revision {identity['revision']} resolves to no commit here (offline, not in the local hub "
                f"cache): the job would stop; download it first or pin scorer.revision=<commit>")
    return f" (hub {scorer.model}, commit {identity['commit']})"
