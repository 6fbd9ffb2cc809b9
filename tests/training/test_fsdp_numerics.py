"""What the fast pre-training path changes, checked against the plain one on CPUs.

* the chunked (fused) loss and its gradients against full logits, with and without z-loss; the
  training forward against OLMo's own;
* with 2 gloo processes and FSDP2 as pre-training applies it (`shard`): meta-device build then
  initialisation after sharding against a CPU build from the same seed (bitwise); sharded fp32
  gradients against one process's; HSDP's against FSDP's; accumulation without the intermediate
  reduce-scatter against with it; the bf16 parameter / fp32 reduction policy against fp32 (within a
  stated tolerance);
* per-block `torch.compile` (the CPU inductor) against eager (slow: compiling takes about a minute here).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F

from detox.training.config import ModelConfig
from detox.training.loss import lm_loss
from detox.training.pretrain.distributed import init_like_cpu, shard
from detox.training.pretrain.model import TrainingOLMo, olmo_config

TINY = ModelConfig(d_model=16, n_heads=2, n_layers=2)
VOCAB, SEQ = 300, 24
# bf16 parameters (8 bits of mantissa) against fp32 on the tiny model: measured 0.002 % (loss) and 0.8 %
# (gradients, relative norm of the difference); bounds with room for other seeds and shapes.
BF16_LOSS_RTOL, BF16_GRAD_RTOL = 1e-2, 3e-2


def config(model: ModelConfig = TINY):
    return olmo_config(model, VOCAB, eos_id=0, pad_id=1, seq_len=SEQ)


def batch(rows: int = 4) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, SEQ + 1), generator=torch.Generator().manual_seed(1))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).norm() / expected.double().norm())


# ----------------------------------------------------------------------------- one process


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
def test_chunked_loss_and_its_gradients_equal_the_full_ones(z_loss):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 23, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (2, 23), generator=g)
    results = []
    for chunk in (0, 5):  # 5 does not divide 23: a short last chunk
        ce, loss = lm_loss(hidden, weight, targets, chunk=chunk, z_loss=z_loss)
        results.append((ce.detach(), loss.detach(), *torch.autograd.grad(loss, (hidden, weight))))
    full, chunked = results
    expected_ce = F.cross_entropy(F.linear(hidden, weight).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(full[0], expected_ce.detach(), rtol=0, atol=0)  # chunk 0: the plain loss, bitwise
    for got, expected in zip(chunked, full):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert (full[1] > full[0]) == bool(z_loss)


def test_chunked_loss_with_bf16_parameters_stays_within_bf16_rounding_of_the_full_one():
    """As under FSDP2's bf16 policy: the matmuls in bf16, the loss and the summed output-matrix gradient in fp32."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 64, 32, generator=g).bfloat16().requires_grad_()
    weight = (0.5 * torch.randn(500, 32, generator=g)).bfloat16().requires_grad_()
    targets = torch.randint(0, 500, (2, 64), generator=g)
    results = []
    for chunk in (0, 16):
        ce, loss = lm_loss(hidden, weight, targets, chunk=chunk)
        results.append((ce.detach(), *torch.autograd.grad(loss, (hidden, weight))))
    (ce_full, *full), (ce_chunked, *chunked) = results
    assert ce_chunked.dtype == torch.float32 and [g.dtype for g in chunked] == [torch.bfloat16] * 2
    torch.testing.assert_close(ce_chunked, ce_full, rtol=1e-6, atol=0)
    for got, expected in zip(chunked, full):
        assert relative_error(got, expected) < 1e-2  # measured 0.3 % (the output matrix's), 0 (the hidden states')


def test_the_training_forward_is_olmos_forward_with_cross_entropy():
    torch.manual_seed(0)
    model, tokens = TrainingOLMo(config()), batch()
    expected = F.cross_entropy(model(tokens[:, :-1]).logits.flatten(0, 1), tokens[:, 1:].flatten())
    ce, loss = model(tokens[:, :-1], tokens[:, 1:])
    assert torch.equal(ce, expected) and torch.equal(loss, ce)  # whole sequence: the same ops, the same bits
    torch.testing.assert_close(model(tokens[:, :-1], tokens[:, 1:], loss_chunk=7)[0], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("init_fn", ["normal", "mitchell"])  # mitchell: truncated, depth-scaled
def test_meta_build_initialised_later_is_the_cpu_build(init_fn):
    model = dataclasses.replace(TINY, init_fn=init_fn)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    cpu = TrainingOLMo(config(model))
    late = TrainingOLMo(dataclasses.replace(config(model), init_device="meta"))
    late.to_empty(device="cpu")
    init_like_cpu(late, state)
    assert all(torch.equal(a, b) for a, b in zip(cpu.parameters(), late.parameters()))


# ----------------------------------------------------------------------------- two gloo processes


def _full_grads(model) -> list[torch.Tensor]:
    return [p.grad.full_tensor() for p in model.parameters()]  # a collective


def _two_ranks(rank: int, world: int, rendezvous: str, out: str) -> None:
    """Every comparison on one pair of processes (each start costs seconds); rank 0 writes the figures."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from detox.training.config import TrainerConfig
    from detox.training.pretrain.distributed import data_parallel_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    reference = TrainingOLMo(config())  # every rank: the unsharded model, built on the CPU
    tokens = batch(2 * world)
    mine = tokens[2 * rank:2 * rank + 2]  # this rank's two rows
    (reference(tokens[:, :-1], tokens[:, 1:])[1]).backward()
    figures = {}

    def sharded(policy=MixedPrecisionPolicy(), over=mesh):
        model = TrainingOLMo(dataclasses.replace(config(), init_device="meta"))
        shard(model, over, policy)
        model.to_empty(device="cpu")
        init_like_cpu(model, state)
        return model

    fp32 = sharded()
    figures["init_bitwise"] = all(torch.equal(p.full_tensor(), r) for p, r in zip(fp32.parameters(),
                                                                                  reference.parameters()))
    ce, loss = fp32(mine[:, :-1], mine[:, 1:])
    loss.backward()  # FSDP2 averages the ranks' gradients in the reduce-scatter
    losses = torch.stack([ce.detach()])
    dist.all_reduce(losses)
    with torch.no_grad():
        whole = float(reference(tokens[:, :-1], tokens[:, 1:])[0])
    figures["fp32_loss_error"] = abs(float(losses[0]) / world - whole)
    fp32_grads = _full_grads(fp32)
    figures["fp32_grad_error"] = max(relative_error(g, r.grad) for g, r in zip(fp32_grads, reference.parameters()))

    # accumulation over two micro-batches of one row: reduce-scatter on both, or on the last only
    def accumulated(skip_first_sync: bool):
        model = sharded()
        for i in range(2):
            model.set_requires_gradient_sync(not skip_first_sync or i == 1)
            (model(mine[i:i + 1, :-1], mine[i:i + 1, 1:])[1] / 2).backward()
            if i == 0:
                figures.setdefault("grads_after_first", {})[skip_first_sync] = any(
                    p.grad is not None for p in model.parameters())
        return _full_grads(model)

    synced, deferred = accumulated(False), accumulated(True)
    figures["accumulation_error"] = max(relative_error(d, s) for d, s in zip(deferred, synced))
    figures["accumulation_vs_whole"] = max(relative_error(d, g) for d, g in zip(deferred, fp32_grads))

    # HSDP as trainer.hsdp builds it for 2 "nodes" of one device: replicated across them, sharded within
    cpu_strategy = SimpleNamespace(root_device=torch.device("cpu"))
    hsdp_mesh = data_parallel_mesh(TrainerConfig(strategy="fsdp", hsdp=True, devices=1, num_nodes=world), cpu_strategy)
    figures["hsdp_mesh"] = [list(hsdp_mesh.mesh_dim_names), list(hsdp_mesh.shape)]
    hsdp = sharded(over=hsdp_mesh)
    hsdp(mine[:, :-1], mine[:, 1:])[1].backward()
    figures["hsdp_grad_error"] = max(relative_error(g, f) for g, f in zip(_full_grads(hsdp), fp32_grads))

    bf16 = sharded(MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    ce16, loss16 = bf16(mine[:, :-1], mine[:, 1:])
    loss16.backward()
    figures["bf16_dtypes"] = [str(ce16.dtype), str(next(bf16.parameters()).dtype),
                              str(next(bf16.parameters()).grad.dtype)]
    both = torch.stack([ce16.detach(), ce.detach()])
    dist.all_reduce(both)
    figures["bf16_loss_error"] = abs(float(both[0] - both[1]) / float(both[1]))
    figures["bf16_grad_error"] = max(relative_error(g, f) for g, f in zip(_full_grads(bf16), fp32_grads))
    if rank == 0:
        with open(out, "w") as f:
            json.dump({k: v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}
                       for k, v in figures.items()}, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_figures(tmp_path_factory):
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("fsdp_numerics")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_two_ranks, args=(2, str(root / "rendezvous"), str(root / "figures.json")), nprocs=2, join=True)
    figures = json.loads((root / "figures.json").read_text())
    print(figures)
    return figures


def test_meta_init_after_sharding_is_the_cpu_build_on_every_rank(two_rank_figures):
    assert two_rank_figures["init_bitwise"]


def test_sharded_fp32_loss_and_gradients_are_one_process_ones(two_rank_figures):
    assert two_rank_figures["fp32_loss_error"] < 1e-6
    assert two_rank_figures["fp32_grad_error"] < 1e-5


def test_accumulation_without_the_intermediate_reduce_scatter_gives_the_same_gradients(two_rank_figures):
    f = two_rank_figures
    assert f["grads_after_first"] == {"False": True, "True": False}  # the first micro-batch really was not reduced
    assert f["accumulation_error"] < 1e-6
    assert f["accumulation_vs_whole"] < 1e-5  # and both are the whole micro-batch's gradient


def test_hsdp_replicates_across_nodes_and_gives_the_fsdp_gradients(two_rank_figures):
    assert two_rank_figures["hsdp_mesh"] == [["replicate", "shard"], [2, 1]]
    assert two_rank_figures["hsdp_grad_error"] < 1e-5


def test_bf16_parameters_with_fp32_reduction_stay_within_tolerance_of_fp32(two_rank_figures):
    f = two_rank_figures
    assert f["bf16_dtypes"] == ["torch.float32", "torch.float32", "torch.float32"]  # sharded master weights, grads
    assert f["bf16_loss_error"] < BF16_LOSS_RTOL
    assert f["bf16_grad_error"] < BF16_GRAD_RTOL
    assert f["bf16_grad_error"] > 1e-5  # the forward really ran in bf16


# ----------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_compiled_blocks_match_eager_ones():
    torch.manual_seed(0)
    eager = TrainingOLMo(config())
    compiled = TrainingOLMo(config())
    compiled.load_state_dict(eager.state_dict())
    for block in compiled.transformer.blocks:
        block.compile()  # as pre-training does with trainer.compile (CPU: the inductor backend)
    explanation = torch._dynamo.explain(eager.transformer.blocks[0])(torch.randn(2, SEQ, TINY.d_model))
    assert explanation.graph_break_count == 0  # ai2-olmo's block is one graph
    tokens = batch()
    results = []
    for model in (eager, compiled):
        ce, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        results.append((ce.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # names (checkpoints, export) unchanged
