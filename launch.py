"""detox's command line: `python launch.py [group=option] [key=value] ...`, `-m` for a sweep.

Hydra composes conf/ into one config; everything else is plain functions of `JobConfig` (see
detox/jobs.py). Results go to MLflow (`detox-table` prints the comparison table). With `plan=true`
every job of the command is composed as Hydra's sweeper would make it, validated and described
(`detox.jobs.describe_plan`), and nothing runs: no launcher, no MLflow run, no stage.
"""

import logging
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from detox.core.schema import ConfigError

from detox.job import JobConfig
from detox.core.redact import redact, redact_output

log = logging.getLogger("detox")
redact_output()  # no log line or output shows a tracking URI's password (Hydra echoes a sweep's overrides)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        job = JobConfig.from_dict(OmegaConf.to_container(cfg, resolve=True))  # validates before any work
        if job.plan:  # plan=true set where plan_command does not see it (a config file): describe, run nothing
            from detox.jobs import describe_plan, plan_job

            print("\n".join(describe_plan([plan_job("", job)])))
            return None
        from detox import jobs  # the heavy imports (torch stack, MLflow) only once the config is valid

        # what only the running job can check (SLURM's tasks, trainer.require_cached_pretrain) is one line too
        run_id, outcome = jobs.run(job, OmegaConf.to_yaml(cfg), log.info)
    except ConfigError as error:
        log.error(f"invalid configuration: {error}")
        sys.exit(2)
    if not run_id:  # a rank other than 0 (rank 0 reports), or one phase (stop_after) of a job
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


PLAN = re.compile(r"^\+{0,2}plan=(true|True|yes)$")  # the override that asks for plan mode


def plan_command(argv: list[str]) -> int:
    """Plan mode: every job of `python launch.py [-m] ARGS plan=true`, composed as Hydra would compose it
    (a -m sweep expanded by Hydra's basic sweeper, with the experiment's sweep params), validated, and
    described; the exit code: 0, 2 for an invalid job (one line naming it), 1 for what Hydra refuses."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    from detox.costs import refuse
    from detox.jobs import describe_plan, plan_job

    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    conf = str(Path(__file__).resolve().parent / "conf")
    try:
        with initialize_config_dir(config_dir=conf, version_base="1.3", job_name="launch"):
            hydra_app = GlobalHydra.instance().hydra
            loader = hydra_app.config_loader
            cfg = hydra_app.compose_config("config", overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
            task = list(cfg.hydra.overrides.task)
            time_limit = OmegaConf.select(cfg, "hydra.launcher.timeout_min")  # SLURM's, where the launcher has one
            points = [(task, cfg)]
            if multirun:
                sweeper = cfg.hydra.sweeper
                if sweeper._target_ != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":  # e.g. Optuna's
                    print(f"hydra/sweeper {sweeper._target_}: its trials are chosen as the search runs, over "
                          f"{dict(sweeper.get('params') or {})}; planned here: the job of the command itself")
                else:
                    params = [f"{key}={value}" for key, value in (sweeper.params or {}).items()] + task
                    jobs = BasicSweeper.split_arguments(OverridesParser.create(config_loader=loader).parse_overrides(params),
                                                        None)[0]
                    composed = {}  # per choice of config groups
                    points = [(job, _sweep_config(loader, cfg, job, composed)) for job in jobs]
            planned = []
            common = [o for o in points[0][0] if all(o in job for job, _ in points) and not PLAN.match(o)]
            if len(points) > 1:
                print(f"every job: {' '.join(common) or '(defaults)'}")
            for i, (job_overrides, job_cfg) in enumerate(points, 1):
                label = " ".join(o for o in job_overrides if not PLAN.match(o) and (len(points) == 1 or o not in common))
                with open_dict(job_cfg):
                    job_cfg.pop("hydra", None)
                try:
                    job = JobConfig.from_dict(OmegaConf.to_container(job_cfg, resolve=True))
                    planned.append(plan_job(label, job))
                except ConfigError as error:
                    where = f" of job {i}/{len(points)} ({label})" if len(points) > 1 else ""
                    print(f"invalid configuration{where}: {error}", file=sys.stderr)
                    return 2
        refuse(planned, time_limit)  # what cannot finish: one line, before any stage
    except HydraException as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    print("\n".join(describe_plan(planned)))
    print(f"plan=true: {len(planned)} job(s) planned, nothing run")
    return 0


def _sweep_config(loader, master: DictConfig, overrides: list[str], composed: dict) -> DictConfig:
    """One sweep job's config, as Hydra's `load_sweep_config` makes it, composed once per choice of config
    groups (kept in `composed`): its other overrides (ratio=10, seed=2) are then set the way Hydra sets
    them after composing. A sweep of 108 jobs over 9 treatments composes 9 times instead of 108."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    groups = tuple(o.input_line for o in parsed if loader.repository.group_exists(o.key_or_group))
    if groups not in composed:
        config = loader.load_sweep_config(master, list(groups))
        with open_dict(config):
            del config["hydra"]  # Hydra's own settings: no job reads them
        composed[groups] = config
    cfg = copy.deepcopy(composed[groups])
    ConfigLoaderImpl._apply_overrides_to_config(
        [o for o in parsed if o.input_line not in groups and not o.is_hydra_override()], cfg)
    return cfg


if __name__ == "__main__":
    if any(PLAN.match(arg) for arg in sys.argv[1:]):
        sys.exit(plan_command(sys.argv[1:]))
    main()
