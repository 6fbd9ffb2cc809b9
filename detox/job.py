"""The configuration of one job (one point of the sweep), composed of each package's options.

Each package owns the options of what it builds, beside it: `detox.data.config` (DataConfig),
`detox.training.config` (ModelConfig, TrainerConfig), `detox.evaluation.config` (ScorerConfig,
EvaluateConfig, RedteamConfig, CapabilityConfig), `detox.toy.config` (ToyConfig), each method its own
(`method`: the chosen method's options type, from the registry `detox.core.methods`; `iti`: the `iti`
config group, owned by method=iti). What is the job's alone lives here: the sweep's point (ratio, seed),
where outputs go, the MLflow store and what a job returns to a hyper-parameter sweeper.

Every stage takes the dataclass it needs, so stages run and test without Hydra. The dataclasses are
OmegaConf structured-config schemas: `JobConfig.from_dict` merges the composed Hydra config into them
(OmegaConf checks types and unknown keys), builds the chosen method's own options, and checks every
declared range (`detox.core.schema`) and every rule that spans fields, before any work starts. Each
failure is one `ConfigError` naming the key and the value. The YAML files under conf/ mirror these
fields and document each option.

Nothing here imports torch: a bad override fails in well under the time torch takes to import.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from detox.core import methods
from detox.core.methods import MethodOptions
from detox.core.schema import ConfigError, check_fields, choice, number
from detox.core.tradeoff import DEFAULT_CE_BUDGET, DEFAULT_MIN_WELL_FORMED
from detox.data.config import DataConfig
from detox.data.sources import source_kind
from detox.evaluation.config import (
    CapabilityConfig,
    EvaluateConfig,
    RedteamConfig,
    ScorerConfig,
)
from detox.methods.iti import ItiOptions
from detox.toy.config import ToyConfig
from detox.training.config import ModelConfig, TamperConfig, TrainerConfig

__all__ = ["JobConfig"]


@dataclass
class SearchConfig:
    """What a job returns to a hyper-parameter sweeper (experiment=best_ratio: Hydra's Optuna sweeper)."""

    # matched_cost: the toxicity after the method, within budget | curve_drop (method=iti_curve): minus the drop
    # at matched cost read off the trial's trade-off curve
    objective: str = choice("none", "none", "matched_cost", "curve_drop")
    metric: str = "insult_probability"  # the toxicity minimised (%): insult_probability (the world) | toxigen | ...
    ce_budget: float = number(DEFAULT_CE_BUDGET, "[0, inf)")  # the most CE (nats, clean and hostile) the method may add
    min_well_formed: float = number(DEFAULT_MIN_WELL_FORMED, "[0, 100]")  # the fewest well-formed generations (%) it may leave


@dataclass
class MlflowConfig:
    tracking_uri: str = ""  # empty: sqlite:///<paths.root>/mlflow.db
    experiment: str = "detox"

    def resolve_uri(self, root: str) -> str:
        return self.tracking_uri or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


@dataclass
class JobConfig:
    task: str = choice("study", "study", "toy")  # study: data -> pre-train -> evaluate; toy: the toy curve
    ratio: float = number(0.0, "[0, 100)", "the toxic share is a percentage")  # toxic share of the tokens
    seed: int = number(1, "[0, inf)")
    root: str = "outputs"  # every output (cache, runs, MLflow store) lives under here
    plan: bool = False  # only describe the job (stages cached or to build, tokens, steps): launch.py's plan mode
    # One phase of a cluster study (detox.pipeline.phase_plan): data, the stages before any training or evaluation
    # (CPU nodes); pretrain, up to the last pre-training (the GPU nodes); none, the whole job. A phase records no
    # MLflow run: the whole job, run after it, finds its stages cached and records the run
    stop_after: str = choice("none", "none", "data", "pretrain")
    device_memory_gb: float = number(80.0, "(0, inf)")  # one GPU's memory: an evaluation that exceeds it is refused (detox.costs)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    method: MethodOptions = field(default_factory=MethodOptions)  # replaced by the chosen method's own options type
    iti: ItiOptions = field(default_factory=ItiOptions)  # the `iti` group: method=iti's (and iti_curve's) options
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    redteam: RedteamConfig = field(default_factory=RedteamConfig)
    tamper: TamperConfig = field(default_factory=TamperConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)

    def validate(self) -> None:
        """Ranges of every field, then the rules that span fields."""
        check_fields(self)
        source_kind(self.data).validate(self)  # the source kind's own rules (its files, the scorers it allows)
        for options in (self.scorer, self.data.tokenizer, self.model, self.capability):  # each package's own rules
            options.check()
        if not self.model.path:  # a pre-trained model is not trained here: the trainer is not read
            self.trainer.check(self.data.seq_len)
        if self.search.objective != "none" and self.method.name == "none":
            raise ConfigError(f"search.objective={self.search.objective} compares the method against the unsteered "
                              "model: choose a method (e.g. method=iti)")
        if self.search.objective == "curve_drop" and self.method.name != "iti_curve":
            raise ConfigError(f"search.objective=curve_drop reads the trial's trade-off curve: set method=iti_curve "
                              f"(not {self.method.name})")
        self.toy.validate()
        if self.tamper.enabled:
            self.tamper.check()
            if not source_kind(self.data).world_grammar:
                raise ConfigError(f"tamper.enabled=true draws fresh toxic documents from the embedded world; "
                                  f"data.source={self.data.source} has no source of unseen toxic text for it yet")
            if self.tamper.batch_size > self.tamper.docs:
                raise ConfigError(f"tamper.batch_size={self.tamper.batch_size} exceeds tamper.docs={self.tamper.docs}")
        if self.model.name == "pretrained" and not self.model.path:
            raise ConfigError("model=pretrained needs model.path: a local model folder or a hub id (owner/name)")
        if self.model.path:
            self._validate_pretrained()
        methods.get(self.method.name).validate(self)

    def _validate_pretrained(self) -> None:
        """A pre-trained base (model.path): a method that pre-trains is refused, and the data must bring prompts
        in words the model knows (the embedded world's are its own tokenizer's)."""
        from detox.core.families import (
            check_pretrained,  # light: reads a local config.json
        )

        if methods.get(self.method.name).pretrains:
            raise ConfigError(f"method={self.method.name} pre-trains its own model: it cannot "
                              f"treat the pre-trained model.path={self.model.path}")
        if source_kind(self.data).world_grammar:
            raise ConfigError(f"model.path={self.model.path} with data.source={self.data.source}: the embedded world's "
                              "prompts are for models trained on it; use data=files or data=paper")
        check_pretrained(self.model.path, self.model.revision)

    @classmethod
    def from_dict(cls, values: dict) -> "JobConfig":
        """The composed config (plain dicts) as a validated JobConfig, or one ConfigError."""
        values = dict(values)
        method = values.pop("method", {}) or {}
        try:
            job = OmegaConf.to_object(OmegaConf.merge(_schema(cls, method.get("name", "none")),
                                                      {**values, "method": method}))
        except OmegaConfBaseException as error:
            raise ConfigError(_explain(error)) from None
        job.validate()
        return job

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.resolve_uri(self.root)


@functools.lru_cache(maxsize=None)
def _schema(cls: type, method: str):
    """The structured schema of `cls` with `method`'s options, made once (a merge never changes it): plan
    mode validates a whole sweep, and making the schema is most of a validation's time."""
    schema = OmegaConf.structured(cls)
    schema.method = OmegaConf.structured(methods.get(method).options)
    return schema


def _explain(error: OmegaConfBaseException) -> str:
    """OmegaConf's type and key errors in this project's words: `key=value: what was expected`."""
    message = str(error).splitlines()[0]
    if isinstance(error, ConfigKeyError):
        return f"unknown key(s) {error.full_key}; check the spelling against conf/"
    converted = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", message)
    if converted:
        expected = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false"}
        value = converted[1] if re.fullmatch(r"[-+.\deE]+", converted[1]) else repr(converted[1])
        return f"{error.full_key}={value}: expected {expected.get(converted[2], converted[2])}"
    return f"{error.full_key}: {message}"
