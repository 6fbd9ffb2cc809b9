"""Typed configuration of one job (one point of the sweep).

Every stage takes the dataclass it needs, so stages run and test without Hydra. `JobConfig.from_dict`
turns the composed Hydra config into these dataclasses and rejects bad input (unknown keys, wrong
types, out-of-range values) with a message naming the culprit, before any work starts. The YAML
files under conf/ mirror these fields and document each option.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from detox.toy import ToyConfig
from detox.world import WorldConfig

METHODS = ("none",)  # post-training methods that are implemented; later stages add theirs here
SCORERS = ("oracle", "classifier")


class ConfigError(ValueError):
    """A configuration value that cannot run; the message names the key and the value."""


@dataclass
class TokenizerConfig:
    vocab_size: int = 512  # size of the BPE vocabulary trained on the sources (ignored with `path`)
    path: str | None = None  # a tokenizer.json to use instead of training one (e.g. OLMo's)


@dataclass
class FilesConfig:
    """Local JSON-lines files, one {"text": ...} (or {"prompt": ...}) object a line."""

    clean: str = ""
    toxic: str = ""
    heldout: str = ""
    toxigen: str = ""
    rtp: str = ""


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic (embedded world, no download) | files (local JSON lines)
    clean_tokens: int = 150_000  # clean tokens in every mixture (held constant across ratios)
    seq_len: int = 128  # tokens per training sequence
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    files: FilesConfig = field(default_factory=FilesConfig)


@dataclass
class ModelConfig:
    """An OLMo-style decoder (rope, swiglu, no bias, non-affine LayerNorm, tied embeddings)."""

    name: str = "tiny"  # a label for runs and tables (conf/model/<name>.yaml)
    d_model: int = 64  # residual width
    n_heads: int = 4  # attention heads per layer (head_dim = d_model / n_heads)
    n_layers: int = 4  # transformer blocks
    mlp_ratio: int = 4  # the SwiGLU MLP's hidden width is d_model * mlp_ratio / 2
    init_std: float = 0.02  # std of the normal initialisation
    rope_theta: float = 10_000.0  # base of the rotary position embedding's frequencies


@dataclass
class TrainerConfig:
    epochs: float = 10.0  # passes over the mixture (the mixture grows with the ratio: clean is fixed)
    # Tokens per optimiser step over all devices; the old `batch_size` B (sequences) is B * seq_len.
    global_batch_tokens: int = 4096
    micro_batch_size: int = 32  # sequences per device per forward pass; gradient accumulation makes up the rest
    lr: float = 1e-2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_fraction: float = 0.05  # share of steps with linear warm-up before the cosine decay
    grad_clip: float = 1.0
    checkpoint_every: int = 50  # optimiser steps between resumable checkpoints
    accelerator: str = "cpu"  # cpu | gpu
    devices: int = 1  # processes per node (GPUs per node with accelerator=gpu)
    num_nodes: int = 1  # machines (SLURM nodes); the data is sharded over devices * num_nodes
    strategy: str = "auto"  # auto: one device | ddp: replicated weights | fsdp: weights sharded per OLMo block
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed (GPUs)
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default


@dataclass
class MethodConfig:
    name: str = "none"  # post-training detoxification method


@dataclass
class ItiConfig:
    strength: str = "mid"  # weak | mid | strong | custom
    alpha: float = 8.0  # shift in units of the activations' std along the direction
    top_k_heads: int = 4  # heads to steer, chosen by probe accuracy


@dataclass
class ScorerConfig:
    name: str = "oracle"  # oracle: the synthetic world's exact scorer | classifier: a transformers model
    threshold: float = 0.5  # a score at or above this counts as toxic
    model: str = ""  # classifier: a local folder or hub id of a text-classification model
    toxic_label: str = "toxic"  # classifier: the label whose probability is the toxicity score
    batch_size: int = 32  # classifier: texts per forward pass


@dataclass
class EvaluateConfig:
    toxigen_max_new_tokens: int = 16  # greedy continuation length of hostile prompts
    rtp_samples: int = 10  # samples per neutral prompt (paper: 25)
    rtp_max_new_tokens: int = 20
    top_p: float = 0.9
    batch_size: int = 64
    heldout_docs: int = 300  # held-out clean documents for the CE loss


@dataclass
class MlflowConfig:
    tracking_uri: str = ""  # empty: sqlite:///<paths.root>/mlflow.db
    experiment: str = "detox"

    def resolve_uri(self, root: str) -> str:
        return self.tracking_uri or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


@dataclass
class JobConfig:
    task: str = "study"  # study: data -> pre-train -> evaluate; toy: the toy superposition curve
    ratio: float = 0.0  # toxic share of the mixture's tokens, percent in [0, 100)
    seed: int = 1
    root: str = "outputs"  # every output (cache, runs, MLflow store) lives under here
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    iti: ItiConfig = field(default_factory=ItiConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.task not in ("study", "toy"):
            raise ConfigError(f"task={self.task!r}: expected 'study' or 'toy'")
        if not 0 <= self.ratio < 100:  # also rejects NaN
            raise ConfigError(f"ratio={self.ratio:g}: the toxic share is a percentage in [0, 100)")
        if self.method.name not in METHODS:
            raise ConfigError(f"method={self.method.name!r} is unknown; implemented: {', '.join(METHODS)}")
        if self.scorer.name not in SCORERS:
            raise ConfigError(f"scorer={self.scorer.name!r} is unknown; implemented: {', '.join(SCORERS)}")
        if self.data.source not in ("synthetic", "files"):
            raise ConfigError(f"data.source={self.data.source!r}: expected 'synthetic' or 'files'")
        if self.data.source == "files":
            for name, value in dataclasses.asdict(self.data.files).items():
                if not value:
                    raise ConfigError(f"data.files.{name} is empty: data=files needs a path for every file")
                if not Path(value).is_file():
                    raise ConfigError(f"data.files.{name}={value!r}: no such file")
            if self.scorer.name == "oracle":
                raise ConfigError("scorer=oracle only knows the synthetic world; data=files needs another scorer")
        if self.scorer.name == "classifier" and not self.scorer.model:
            raise ConfigError("scorer=classifier needs scorer.model: a local folder or hub id of a classifier")
        if self.data.tokenizer.path and not Path(self.data.tokenizer.path).is_file():
            raise ConfigError(f"data.tokenizer.path={self.data.tokenizer.path!r}: no such file")
        if self.model.d_model % self.model.n_heads:
            raise ConfigError(f"model.d_model={self.model.d_model} is not divisible by n_heads={self.model.n_heads}")
        for key in ("clean_tokens", "seq_len"):
            if getattr(self.data, key) <= 0:
                raise ConfigError(f"data.{key} must be positive, got {getattr(self.data, key)}")

    @classmethod
    def from_dict(cls, values: dict) -> "JobConfig":
        return _build(cls, values, "")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.resolve_uri(self.root)


def _build(cls, values, prefix: str):
    """Build dataclass `cls` from nested dicts, coercing scalars and naming any bad key or value."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in sorted(unknown))}; "
                          f"{prefix.rstrip('.') or 'config'} takes {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {error}") from None


def _coerce(hint, value, key: str):
    if value == "???":  # OmegaConf's mark of a mandatory value
        raise ConfigError(f"{key} is required: set it on the command line ({key}=...)")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    if origin is typing.Union or origin is types.UnionType:
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return [_coerce(args[0], v, key) for v in value]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}={value!r}: expected {len(args)} values")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if hint in (int, float):
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a number") from None
        if hint is int and number != float(value):
            raise ConfigError(f"{key}={value!r}: expected a whole number")
        return number
    if hint is str:
        return str(value)
    return value
