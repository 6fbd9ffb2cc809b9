"""How the model is spread over devices: Lightning's strategy (one device, DDP's replicated weights, or
FSDP2 through `ModelParallelStrategy`; gloo on CPUs, NCCL on GPUs) and precision, FSDP2's wrapping of
every OLMo block and the root with its mixed-precision policy, the device mesh (HSDP across nodes with
`trainer.hsdp`), the initialisation of a model built on the meta device and sharded (`init_like_cpu`:
the values a CPU build has), and the unsharded weights gathered back for the export.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from olmo.model import OLMo

from detox.training.config import TrainerConfig


def lightning_strategy(cfg: TrainerConfig):
    if cfg.strategy == "fsdp":
        return ModelParallelStrategy(data_parallel_size=cfg.devices * cfg.num_nodes, tensor_parallel_size=1)
    if cfg.strategy == "ddp":
        return DDPStrategy()  # gloo on CPUs, NCCL on GPUs
    return "auto"


def lightning_precision(cfg: TrainerConfig) -> str:
    """Lightning's precision: with fsdp, bf16 is FSDP2's mixed-precision policy, not Lightning's autocast."""
    return "32-true" if cfg.strategy == "fsdp" and cfg.precision == "bf16-mixed" else cfg.precision


def mixed_precision_policy(cfg: TrainerConfig):
    """FSDP2's bf16 parameters and fp32 gradient reduction for precision=bf16-mixed (OLMo-core, torchtitan):
    all-gathers and reduce-scatters in half the bytes of fp32, without Lightning's autocast on top."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if cfg.precision == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def data_parallel_mesh(cfg: TrainerConfig, strategy: ModelParallelStrategy):
    """The mesh the blocks are sharded over: all devices (FSDP), or with `hsdp` a 2-D (node, device)
    mesh, sharded within a node and replicated across nodes (HSDP)."""
    if not cfg.hsdp:
        return strategy.device_mesh["data_parallel"]
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(strategy.root_device.type, (cfg.num_nodes, cfg.devices),
                            mesh_dim_names=("replicate", "shard"))


def shard(model: OLMo, mesh, policy) -> None:
    """FSDP2 on every block, then on the root (the rest: the embedding, tied to the output layer)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.transformer.blocks:  # one all-gather per block keeps peak memory at one block
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def init_like_cpu(model: OLMo, rng_state: torch.Tensor) -> None:
    """Give `model`, built on the meta device, sharded and materialised (`to_empty`), exactly the values
    `OLMo(config)` built on the CPU from the RNG state `rng_state` has, holding one embedding or block in
    CPU memory at a time, never the whole model. ai2-olmo's construction draws the default
    initialisation of the embedding, then of each block; its `reset_parameters` then draws the values
    kept, in the same order; this replays both with ai2-olmo's own code and copies each rank's shard."""
    from types import SimpleNamespace

    from olmo.model import BufferCache, LayerNorm, OLMoBlock
    from torch.distributed.tensor import DTensor, distribute_tensor

    config = dataclasses.replace(model.config, init_device="cpu")

    def embedding() -> torch.nn.Embedding:
        return torch.nn.Embedding(config.embedding_size or config.vocab_size, config.d_model)

    def quietly_built(build):  # a twin whose construction draws nothing from the RNG stream being replayed
        with torch.random.fork_rng(devices=[]):
            return build()

    def copy_into(target: torch.nn.Module, twin: torch.nn.Module) -> None:
        with torch.no_grad():
            for name, value in twin.named_parameters():
                param = target.get_parameter(name)
                if isinstance(param, DTensor):  # every rank holds the full value: no communication
                    value = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
                    param.to_local().copy_(value.to_local())
                else:
                    param.copy_(value)

    def blocks():  # OLMo.reset_parameters initialises each as it is handed out; copied when it asks for the next
        for i, target in enumerate(model.transformer.blocks):
            twin = quietly_built(lambda: OLMoBlock.build(i, config, BufferCache()))
            yield twin
            copy_into(target, twin)

    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(rng_state)
        embedding()  # the construction's draws
        for i in range(config.n_layers):
            OLMoBlock.build(i, config, BufferCache())
        wte = quietly_built(embedding)
        OLMo.reset_parameters(SimpleNamespace(config=config, transformer=SimpleNamespace(
            wte=wte, ln_f=quietly_built(lambda: LayerNorm.build(config)), blocks=blocks())))
        copy_into(model.transformer.wte, wte)


def full_state_dict(model: torch.nn.Module, trainer: L.Trainer) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU. With fsdp this is a collective every rank must join; rank 0 gets them."""
    if not isinstance(trainer.strategy, ModelParallelStrategy):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
