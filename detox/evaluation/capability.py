"""Capability the field's way: lm-evaluation-harness (EleutherAI's lm-eval) tasks on a loaded model.

The model is handed to lm-eval as it is, already loaded (its `HFLM` wraps the instance), so whatever
is active around the call acts on every request: ITI's hooks on the treated model, nothing on the base.
A method's prompt prefix (prompting) goes before every context as lm-eval's system instruction. Task
names are lm-eval's (mmlu, hellaswag, arc_easy, toxigen, ...; the hub datasets their YAMLs name are
downloaded on first use) or those of the YAMLs in `include_path`, e.g. a local task over local files.

Metrics are named `<prefix>_<task>_<metric>` (lm-eval's `acc,none` becomes `acc`; a filter other than
`none` is appended), as lm-eval reports them: accuracies as fractions, perplexities as they are.
The full lm-eval results go to `lm_eval.json` in the stage's folder.

Light at import (lm-eval is imported when a stage runs): the plan reads `spec` to key the stage.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from detox.core.schema import ConfigError

RESULTS = "lm_eval.json"  # the stage's file: lm-eval's results per task
INSTALL = "pip install 'lm-eval==0.4.13' (or pip install -e '.[capability]')"
BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap for the standard errors of metrics without a closed form


def lm_eval_version() -> str:
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        raise ConfigError(f"capability.tasks needs lm-evaluation-harness: {INSTALL}") from None


def spec(cfg) -> dict:
    """What a capability stage's results depend on: the options, lm-eval's version (its task definitions
    and their datasets' revisions come with it) and the content of every file under `include_path`."""
    from detox.core.filehash import content_hash

    spec = {**asdict(cfg), "lm_eval": lm_eval_version()}
    if cfg.include_path:
        root = Path(cfg.include_path).resolve()
        spec["include_files"] = {str(f.relative_to(root)): content_hash(f)
                                 for f in sorted(root.rglob("*")) if f.is_file()}
    return spec


def metric_name(prefix: str, task: str, key: str) -> str | None:
    """`acc,none` of task `arc_easy` -> `<prefix>_arc_easy_acc`; None for what is not a metric (alias, ...)."""
    metric, _, filter_ = key.partition(",")
    if not filter_:
        return None
    name = f"{prefix}_{task}_{metric}" + ("" if filter_ == "none" else f"_{filter_}")
    return re.sub(r"[^\w.\-/ ]", "_", name)  # the characters MLflow allows in a metric name


def run_tasks(model, tokenizer, cfg, seed: int, out: Path, prefix: str, instruction: str = "") -> dict:
    """lm-eval's tasks `cfg.tasks` on `model` (with its tokenizer); metrics named `<prefix>_<task>_<metric>`."""
    lm_eval_version()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(Path(cfg.include_path).resolve()) if cfg.include_path else None)
    unknown = [task for task in cfg.tasks if not manager.match_tasks([task])]
    if unknown:
        raise ConfigError(f"capability.tasks: {unknown} are not lm-eval tasks (nor in capability.include_path)")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=str(model.device))
    results = lm_eval.simple_evaluate(
        model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot, limit=cfg.limit, task_manager=manager,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS, system_instruction=instruction or None)
    (out / RESULTS).write_text(json.dumps(results["results"], indent=2, default=str))
    metrics = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            name = metric_name(prefix, task, key)
            if name and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[name] = float(value)
    return metrics
