"""Hydra callbacks (named in conf/config.yaml), and the Lightning callbacks that change how pre-training
trains. Hydra creates its callbacks at start-up, before a config is validated, so this module imports
nothing heavy: the report is imported when a sweep ends, torch and Lightning when a Lightning callback
is made (`document_mask`)."""

from hydra.experimental.callback import Callback

from detox.config import MlflowConfig


class PrintTableOnMultirunEnd(Callback):
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


def document_attention_bias(input_ids, eos_id: int):
    """(batch, 1, T, T) additive attention bias: 0 where a token may attend (itself and the earlier tokens
    of its own document, the end-of-document token before it opening it), the lowest float elsewhere."""
    import torch

    document = torch.cumsum(input_ids == eos_id, dim=1)  # an EOS starts the next document's count
    causal = torch.ones(input_ids.shape[1], input_ids.shape[1], dtype=torch.bool, device=input_ids.device).tril()
    allowed = (document[:, :, None] == document[:, None, :]) & causal
    bias = torch.zeros(allowed.shape, device=input_ids.device).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return bias[:, None]


def document_mask(eos_id: int):
    """A Lightning callback for pre-training on packed windows: every OLMo block attends only within a
    token's own document, so a decision is computed from its document alone, at the same relative
    positions, whether the document opens the window or follows three others; exactly as in the
    evaluation, whose prompts are one document each (EOS, then the text). Without it a model learns the
    insult rate only as an average over positions and preceding documents, and on the synthetic world
    its answer after EOS alone landed 10 points off its data, by seed (benchmarks/calibration.py).

    The bias is computed per batch from its input ids and handed to each block by a forward pre-hook,
    so the model's own forward is unchanged and the exported weights run without it."""
    import lightning as L

    class DocumentMask(L.Callback):
        def __init__(self):
            self.bias = None

        def on_fit_start(self, trainer, module):
            def hook(block, args, kwargs):
                if self.bias is not None and kwargs.get("attention_bias") is None:
                    kwargs["attention_bias"] = self.bias
                return args, kwargs

            for block in module.model.transformer.blocks:
                block.register_forward_pre_hook(hook, with_kwargs=True)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.bias = document_attention_bias(batch[:, :-1], eos_id)  # the inputs; the last token is a target

        def on_train_end(self, trainer, module):
            self.bias = None

    return DocumentMask()
