"""Hydra callbacks (named in conf/config.yaml). Hydra creates them at start-up, before a config is
validated, so this module imports nothing heavy: the report is imported when a sweep ends."""

from hydra.experimental.callback import Callback

from detox.job import MlflowConfig


class ReportOnMultirunEnd(Callback):
    """When a study sweep ends, print the report of its experiment and write it to `<sweep dir>/report`;
    with `summary_run: true` also into the experiment's summary run (see detox.report)."""

    def __init__(self, summary_run: bool = False) -> None:
        self.summary_run = summary_run

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("task") == "study":
            from detox.report import ReportConfig, build_report

            mlflow_cfg = MlflowConfig(**config.mlflow)
            build_report(ReportConfig(mlflow_cfg.resolve_uri(config.root), mlflow_cfg.experiment,
                                      out=f"{config.hydra.sweep.dir}/report", summary_run=self.summary_run))

