"""detox's command line: `python launch.py [group=option] [key=value] ...`, `-m` for a sweep.

Hydra composes conf/ into one config; everything else is plain functions of `JobConfig` (see
detox/jobs.py). Results go to MLflow (`detox-table` prints the comparison table).
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from detox.config import ConfigError, JobConfig
from detox.core.redact import redact, redact_output

log = logging.getLogger("detox")
redact_output()  # no log line or output shows a tracking URI's password (Hydra echoes a sweep's overrides)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        job = JobConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))  # validates before any work
        from detox import jobs  # the heavy imports (torch stack, MLflow) only once the config is valid

        # what only the running job can check (SLURM's tasks, trainer.require_cached_pretrain) is one line too
        run_id, outcome = jobs.run(job, OmegaConf.to_yaml(cfg), log.info)
    except ConfigError as error:
        log.error(f"invalid configuration: {error}")
        sys.exit(2)
    if not run_id:  # a rank other than 0: rank 0 reports
        return None
    uri = redact(job.tracking_uri)  # never a password, whatever the URI carries
    log.info(f"MLflow run {run_id} in experiment {job.mlflow.experiment!r} at {uri}")
    if job.task == "study":
        log.info(f"Comparison table: detox-table --tracking-uri {uri} --experiment {job.mlflow.experiment}")
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        log.info(f"MLflow UI: {uri}")
    else:  # a local UI on the store, reachable from this machine only unless told otherwise
        log.info(f"MLflow UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    # what a hyper-parameter sweeper (experiment=best_ratio) minimises; None outside a search
    return outcome.metrics.get("search_objective") if outcome else None


if __name__ == "__main__":
    main()
