"""Hydra callbacks (named in conf/config.yaml). Hydra creates them at start-up, before a config is
validated, so this module imports nothing heavy: the report is imported when a sweep ends."""

from hydra.experimental.callback import Callback

from detox.config import MlflowConfig


class PrintTableOnMultirunEnd(Callback):
    """Print the comparison table (and plot it in the sweep folder) when a sweep ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("task") == "study":
            from detox.report import print_table

            mlflow_cfg = MlflowConfig(**config.mlflow)
            print_table(mlflow_cfg.resolve_uri(config.root), mlflow_cfg.experiment,
                        plot=f"{config.hydra.sweep.dir}/toxicity_vs_ratio.png")
