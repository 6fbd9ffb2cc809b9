"""The training stages' options: the model to build (`ModelConfig`, conf/model/) and how to pre-train it
(`TrainerConfig`, conf/trainer/); the post-training runs' (`SftConfig`, `DpoConfig`: method=sft and
method=dpo make their options of them, conf/method/sft.yaml and dpo.yaml). Each option file documents the
fields it sets; a field an option file leaves out keeps the default here.

Light (nothing here imports torch): a bad override fails before the torch stack loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from detox.core.schema import ConfigError, choice, number


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

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

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
    eps: float = number(1e-8, "(0, inf)")  # AdamW's epsilon (torch's default; OLMo-1B: 1e-5)
    checkpoint_every: int = number(50, "[1, inf)")  # optimiser steps between resumable checkpoints
    # also a checkpoint once this many minutes of training passed since the last one (0: steps only), so a
    # requeue at a time limit loses at most this much whatever a step costs; and one on SLURM's warning
    # signal before the limit (detox.training.pretrain.callbacks.AtomicCheckpoints)
    checkpoint_minutes: float = number(0.0, "[0, inf)")
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
    # A treatment job (phase 2 of a cluster study, docs/guide/paper-at-scale.md, "Running at scale"): its pre-trained models
    # must already be in the cache, so a one-GPU job never pre-trains a base model for days; a missing
    # one stops the job before any stage, naming it. It changes what a job may do, not what it
    # computes: no cache key reads it.
    require_cached_pretrain: bool = False
    # Each token attends only within its own document (the EOS before it opening it), so a decision in a
    # packed window is computed as an evaluation prompt's is (EOS, then one document), not after other text.
    # Off here, ON in conf/trainer/cpu.yaml (the default job's trainer): the embedded world's calibrated
    # base models. A bare TrainerConfig() is therefore not the default job's trainer.
    document_mask: bool = False
    # Exponential moving average of the weights, updated every optimiser step (Lightning's EMA weight
    # averaging): the exported model is the average. 0: off. Not with strategy=fsdp. Off here, 0.98 in
    # conf/trainer/cpu.yaml (the default job's trainer), as document_mask.
    ema_decay: float = number(0.0, "[0, 1)")
    snapshots: int = number(0, "[0, inf)")  # models kept at as many evenly spaced steps (training dynamics)

    def check(self, seq_len: int) -> None:
        """The rules that span trainer fields (and the sequence length)."""
        ranks = self.devices * self.num_nodes
        # strategy=fsdp over one rank is allowed: FSDP2 over a world of one is the preset's own path on one
        # GPU (benchmarks/gpu_throughput.py runs it where a loan has one GPU)
        if self.strategy == "auto" and ranks > 1:
            raise ConfigError(f"trainer.devices * num_nodes = {ranks} needs trainer.strategy=ddp or fsdp")
        if self.hsdp and self.strategy != "fsdp":
            raise ConfigError(f"trainer.hsdp=true shards within a node and replicates across nodes: it needs "
                              f"trainer.strategy=fsdp, not {self.strategy}")
        if self.snapshots and self.strategy == "fsdp":
            raise ConfigError(f"trainer.snapshots={self.snapshots} exports unsharded weights: not with trainer=fsdp")
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
        del spec["num_threads"], spec["checkpoint_every"], spec["checkpoint_minutes"], spec["deterministic"]
        del spec["require_cached_pretrain"]
        for speed_only in ("compile", "loss_chunk", "log_every", "hsdp", "loader_workers"):
            del spec[speed_only]
        if not self.z_loss:  # off: the keys of models trained before it existed
            del spec["z_loss"]
        if self.eps == 1e-8:  # torch's default, which every model before the field was trained with
            del spec["eps"]
        if not self.warmup_steps:  # unset, warmup_fraction decides: the keys of models trained before it existed
            del spec["warmup_steps"]
        for added in ("document_mask", "ema_decay", "snapshots"):  # off: the keys of models trained before they existed
            if not spec[added]:
                del spec[added]
        return spec


@dataclass
class FinetuneConfig:
    """The optimisation of a post-training run, shared by SFT and DPO; each method's options subclass it
    (detox.methods.sft.SftOptions, detox.methods.dpo.DpoOptions), adding their own and their defaults."""

    steps: int = number(200, "[1, inf)")  # optimiser steps (the data is cycled through as often as needed)
    lr: float = number(1e-4, "(0, inf)")  # peak learning rate
    batch_size: int = number(16, "[1, inf)")  # documents (SFT) or preference pairs (DPO) per optimiser step
    warmup_fraction: float = number(0.05, "[0, 1)")  # share of steps with linear warm-up before the cosine decay
    weight_decay: float = number(0.0, "[0, inf)")
    grad_clip: float = number(1.0, "(0, inf)")
    accelerator: str = choice("auto", "auto", "cpu", "gpu")  # Lightning accelerator (auto: a GPU if there is one)


@dataclass
class SftConfig(FinetuneConfig):
    max_docs: int = number(2000, "[1, inf)")  # non-toxic documents used (the first ones of the clean source)
    max_tokens: int = number(256, "[2, inf)")  # tokens kept per document, end-of-document tokens included


@dataclass
class DpoConfig(FinetuneConfig):
    lr: float = number(1e-5, "(0, inf)")
    warmup_fraction: float = number(0.1, "[0, 1)")
    beta: float = number(0.1, "(0, inf)")  # strength of the implicit KL penalty towards the reference model
    max_pairs: int = number(2000, "[1, inf)")  # pairs used (the first ones of the preference set)


@dataclass
class TamperConfig:
    """The `tamper` group: a fine-tuning attack on the treated model after its evaluation (Deep Ignorance's
    protocol, O'Brien et al. 2025): `steps` AdamW steps on toxic documents it has not seen, the
    toxicity and CE measured at each of `eval_at` (detox.training.tamper). Off by default."""

    enabled: bool = False
    steps: int = number(200, "[1, inf)")  # optimiser steps of the attack
    eval_at: list[int] = number([0, 25, 50, 100, 200], "[0, inf)")  # the step counts measured: 0 first, increasing, the last = steps
    docs: int = number(500, "[1, inf)")  # fresh toxic documents the attack draws its batches from
    batch_size: int = number(8, "[1, inf)")  # documents per step
    lr: float = number(3e-4, "(0, inf)")  # constant learning rate
    max_tokens: int = number(128, "[2, inf)")  # tokens kept per document

    def check(self) -> None:
        at = list(self.eval_at)
        if not at or at[0] != 0 or any(b <= a for a, b in zip(at, at[1:])) or at[-1] != self.steps:
            raise ConfigError(f"tamper.eval_at={at}: needs 0 first, increasing, ending at tamper.steps={self.steps}")
