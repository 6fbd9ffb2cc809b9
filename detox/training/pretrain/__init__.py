"""Pre-training stage: ai2-olmo's `OLMo` inside a LightningModule, exported to transformers'
`OlmoForCausalLM` (identical logits) for the stages after it.

One code path from a CPU to many GPU nodes:

* `trainer.strategy`: `auto` (one device), `ddp` (replicated weights) or `fsdp` (Lightning's
  `ModelParallelStrategy` with `fully_shard` on every OLMo block and the root; gloo on CPUs, NCCL on GPUs).
* The batch is set in tokens (`trainer.global_batch_tokens`); gradient accumulation makes up what
  `micro_batch_size` sequences on each of `devices * num_nodes` devices do not, and every epoch is one
  seeded permutation of the windows cut into global batches, so a run is the same optimisation on 1 or
  16 devices (up to float rounding).
* A killed run resumes exactly: the checkpoint (a file, or a distributed-checkpoint folder when
  sharded) holds the data position, and the sampler continues from it mid-epoch. Each save goes to a
  new step checkpoint, and `last.ckpt` is switched to it atomically only once it is whole
  (`AtomicCheckpoints`), so a kill during a save loses at most the steps since the previous one.
* `trainer.deterministic`: torch's deterministic algorithms (and cuBLAS's fixed workspace on GPUs), so
  that a GPU run, not only a CPU one, repeats bitwise.
* `trainer.document_mask`: attention kept within each document of a packed window (an attention bias
  handed to every block, `document_attention_bias`); `trainer.ema_decay`: the exported model is an
  exponential moving average of the weights (`WeightEMA`, Lightning's EMA weight averaging), which the
  checkpoints hold too, so a resumed run ends with the same average.
* Per optimiser step it records the loss, the learning rate, tokens/s and, on GPUs, the model FLOPs
  utilisation (`HISTORIES`, step -> value), read from the devices every `trainer.log_every` steps.
* Speed as OLMo-core's OLMo-1B recipe: with fsdp, FSDP2's bf16-parameter / fp32-reduction policy, no
  reduce-scatter before an optimiser step's last micro-batch, a meta-device build initialised after
  sharding (`init_like_cpu`), HSDP across nodes (`trainer.hsdp`); per-block `torch.compile`
  (`trainer.compile`); the output layer fused with the loss over sequence chunks (`trainer.loss_chunk`,
  detox.training.loss); fused AdamW on GPUs, never decaying the embeddings.

The package by concern: `stage` (the stage: checks, the Lightning trainer, the artifact), `loader`
(the windows, the resumable sampler and loader), `model` (OLMo, its loss-returning forward, the
LightningModule), `distributed` (strategies, FSDP2 wrapping, meshes, the meta-device initialisation),
`callbacks` (histories, EMA, atomic checkpoints), `export` (the transformers model), `local_ranks`
(the processes of a multi-device run on one node; `__main__` runs one of them). Here: the names the
rest of the project and the tests use.
"""

from detox.training.pretrain.callbacks import STEP_CHECKPOINT, checkpoint_step, flops_per_token, peak_flops
from detox.training.pretrain.export import export_hf, hf_tokenizer
from detox.training.pretrain.local_ranks import pretrain_on_local_ranks
from detox.training.pretrain.model import TrainingOLMo, olmo_config
from detox.training.pretrain.stage import check_trainer, load_histories, pretrain

# what callers outside the package use; the loader's and the distributed wrapping's internals are imported
# from their own modules
__all__ = ["STEP_CHECKPOINT", "TrainingOLMo", "check_trainer", "checkpoint_step", "export_hf", "flops_per_token",
           "hf_tokenizer", "load_histories", "olmo_config", "peak_flops", "pretrain", "pretrain_on_local_ranks"]
