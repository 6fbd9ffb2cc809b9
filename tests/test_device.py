"""Device mistakes, caught on a CPU: the inference entry points (evaluation, probing, steering) run
against a model on a second device.

A GPU is not needed to see a batch left on the CPU or a `.numpy()` of a device tensor, only a
device that behaves like one. `ElsewhereDevice` is that device: a torch-function mode under which
`.to("cuda")` (and every factory call with `device="cuda"`) gives an `Elsewhere` tensor, which holds
its values on the CPU but reports the `cuda` device and obeys CUDA's rules: an op that mixes it with
a CPU tensor (other than a 0-dim scalar, an index or a copy's source) raises as CUDA does, and
`.numpy()` refuses it until `.cpu()` brings it back. Nothing touches a real GPU: torch's CPU build
cannot, and the mode intercepts every move before it reaches torch.
A forward pre-hook on the model's root asserts besides that every input tensor is on the
parameters' device, naming the argument.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from helpers import tiny_model, tiny_tokenizer
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from detox.evaluation.config import EvaluateConfig

DEVICE = torch.device("cuda", 0)


class Elsewhere(torch.Tensor):
    """A CPU tensor standing for one on DEVICE (only inside `ElsewhereDevice`)."""

    __torch_function__ = torch._C._disabled_torch_function_impl


def _is_elsewhere(x) -> bool:
    return isinstance(x, Elsewhere)


def _plain(x):
    return x.as_subclass(torch.Tensor) if _is_elsewhere(x) else x


def _moved(x):
    return x.as_subclass(Elsewhere) if isinstance(x, torch.Tensor) and not _is_elsewhere(x) else x


def _target(device) -> str | None:
    return None if device is None else torch.device(device).type


# The ops CUDA lets take CPU tensors beside device ones: a copy's source, and index tensors (an assigned
# value is checked on its own below).
CROSS_DEVICE_OK = {torch.Tensor.copy_, torch.Tensor.__getitem__, torch.Tensor.__setitem__}


class ElsewhereDevice(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.device.__get__, torch.Tensor.is_cuda.__get__, torch.Tensor.is_cpu.__get__):
            elsewhere = _is_elsewhere(args[0])
            if func == torch.Tensor.device.__get__:
                return DEVICE if elsewhere else func(*args)
            return elsewhere == (func == torch.Tensor.is_cuda.__get__)
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and _is_elsewhere(args[0]):
            raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first.")
        if func is torch.Tensor.__deepcopy__ and _is_elsewhere(args[0]):  # copy.deepcopy of a moved model
            copied = _as_parameter(_moved(_plain(args[0]).detach().clone()), args[0].requires_grad)
            args[1][id(args[0])] = copied
            return copied
        if func is torch.Tensor.cpu:
            return func(_plain(args[0]), *args[1:], **kwargs)
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            where = {k: v for k, v in kwargs.items() if k != "copy"}  # _parse_to does not take copy
            device, dtype = ((DEVICE, None) if func is torch.Tensor.cuda else
                             torch._C._nn._parse_to(*tree_map(_plain, args[1:]), **tree_map(_plain, where))[:2])
            if any(map(_is_elsewhere, [*args[1:], where.get("other")])):  # .to(other): other's device
                device = DEVICE
            if _target(device) == DEVICE.type:
                plain = _plain(args[0])
                return _moved(plain.to(dtype=dtype or plain.dtype, copy=kwargs.get("copy", False)))
            if device is not None:  # to the CPU
                return func(*tree_map(_plain, args), **tree_map(_plain, kwargs))
        created_here = _target(kwargs.get("device")) == DEVICE.type
        if created_here:
            kwargs = {**kwargs, "device": "cpu"}
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        elsewhere = created_here or any(map(_is_elsewhere, tensors))
        if elsewhere and func not in CROSS_DEVICE_OK:
            stray = [x for x in tensors if not _is_elsewhere(x) and x.dim() > 0]
            if stray:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{DEVICE} and cpu! ({getattr(func, '__name__', func)}: a cpu tensor of shape "
                                   f"{tuple(stray[0].shape)})")
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            if not _is_elsewhere(args[0]) and any(map(_is_elsewhere, tensors)):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
            value = args[2] if func is torch.Tensor.__setitem__ else None
            if _is_elsewhere(args[0]) and isinstance(value, torch.Tensor) and not _is_elsewhere(value) \
                    and value.dim() > 0:
                raise RuntimeError(f"Expected all tensors to be on the same device: a cpu value assigned into {DEVICE}")
        out = func(*tree_map(_plain, args), **tree_map(_plain, kwargs))
        return tree_map(_moved, out) if elsewhere else out


def inputs_on_model_device(module, args, kwargs):
    device = next(module.parameters()).device
    for name, value in [*enumerate(args), *kwargs.items()]:
        if isinstance(value, torch.Tensor):
            assert value.device == device, f"input {name!r} is on {value.device}, the model on {device}"


def _as_parameter(data: torch.Tensor, requires_grad: bool) -> torch.nn.Parameter:
    if not _is_elsewhere(data):
        return torch.nn.Parameter(data, requires_grad)
    data._is_param = True  # what Parameter does for a tensor subclass (its own detach() would lose Elsewhere)
    return data.requires_grad_(requires_grad)


def _move(model, wrap) -> None:
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            module._parameters[name] = _as_parameter(wrap(param.data), param.requires_grad)
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = wrap(buffer)


@contextlib.contextmanager
def on_second_device(model):
    """`model` moved to DEVICE (back to the CPU afterwards) and the mode under which DEVICE exists."""
    handle = model.register_forward_pre_hook(inputs_on_model_device, with_kwargs=True)
    _move(model, _moved)
    try:
        with ElsewhereDevice():
            assert model.device == DEVICE
            yield model
    finally:
        _move(model, _plain)
        handle.remove()


@pytest.fixture
def model_and_tokenizer():
    tokenizer = tiny_tokenizer()
    return tiny_model(tokenizer), tokenizer


# ------------------------------------------------------------------------- the device itself


@torch.no_grad()
def test_the_second_device_refuses_what_cuda_refuses(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with on_second_device(model):
        weight = model.model.embed_tokens.weight
        assert weight.device == DEVICE and weight.is_cuda and not weight.is_cpu
        cpu = torch.ones(3)
        with pytest.raises(RuntimeError, match="same device"):
            torch.ones(3, device=DEVICE) + cpu
        with pytest.raises(TypeError, match="numpy"):
            torch.ones(3, device=DEVICE).numpy()
        with pytest.raises(AssertionError, match="input 'input_ids' is on cpu"):
            model(input_ids=torch.tensor([[1, 2, 3]]))
        batch = tokenizer(["the cat sat"], return_tensors="pt").to(model.device)
        logits = model(**batch).logits
        assert logits.device == DEVICE
        assert (torch.ones(3, device=DEVICE) * torch.tensor(2.0)).cpu().tolist() == [2.0] * 3  # scalars mix
        assert logits[0, torch.tensor([0])].cpu().numpy().shape == (1, len(tokenizer))  # cpu indices are fine
        with pytest.raises(RuntimeError, match="cpu value"):
            logits[0, torch.tensor([0])] = torch.zeros(1, len(tokenizer))
        with pytest.raises(RuntimeError, match="indices"):
            torch.zeros(3)[torch.tensor([0], device=DEVICE)]
    expected = model(**tokenizer(["the cat sat"], return_tensors="pt")).logits
    torch.testing.assert_close(logits.as_subclass(torch.Tensor), expected)  # the same numbers, only elsewhere


# ------------------------------------------------------------------------- the entry points


@pytest.fixture(scope="module")
def world_model(world_data, tmp_path_factory):
    """A tiny model on the synthetic world's tokenizer, so that the world's measures apply."""
    from transformers import OlmoConfig, OlmoForCausalLM

    from detox.training.pretrain import hf_tokenizer

    tokenizer = hf_tokenizer(world_data[1] / "tokenizer")
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True)).eval()
    return model, tokenizer


def _world_rows(world_data):
    """A few rows of each prompt set and a few held-out texts of the world's sources."""
    from detox.data.parts import has_part, load_part
    from detox.evaluation.prompt_sets import PROMPT_SETS

    sources = world_data[1] / "sources"
    rows = {s.name: load_part(sources, s.part)[:4] for s in PROMPT_SETS if has_part(sources, s.part)}
    return rows, [row["text"] for row in load_part(sources, "heldout")[:4]]


def test_evaluation_runs_on_a_second_device(world_data, world_model, tmp_path):
    from detox.evaluation.evaluate import evaluate

    model, tokenizer = world_model
    rows, heldout = _world_rows(world_data)
    cfg = EvaluateConfig(batch_size=3, toxigen_max_new_tokens=4, rtp_max_new_tokens=4, rtp_samples=2)

    def scorer(texts):
        return np.linspace(0, 1, len(texts))

    with on_second_device(model):
        elsewhere = evaluate(model, tokenizer, rows, {"clean": heldout}, scorer, cfg, 0.5, 0, tmp_path, seq_len=128)
    here = evaluate(model, tokenizer, rows, {"clean": heldout}, scorer, cfg, 0.5, 0, tmp_path, seq_len=128)
    assert "insult_probability" in here and "ce_loss" in here  # the world's measures ran
    assert elsewhere.keys() == here.keys()
    for name, value in here.items():
        assert elsewhere[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_probing_and_steering_run_on_a_second_device(world_data, world_model, tmp_path):
    """The probe stage, then evaluation under ITI's steering hooks (shifts made on the CPU, as the
    steer stage saves them) and baked into biases, and the red-team's target loss."""
    from detox.data.parts import load_part
    from detox.evaluation.evaluate import evaluate
    from detox.evaluation.redteam import target_loss
    from detox.steering.probe import probe_stage
    from detox.steering.steer import bake_into_bias, steering

    model, tokenizer = world_model
    probe_rows = load_part(world_data[1] / "sources", "probe")[:40]
    rows, heldout = _world_rows(world_data)
    rows = {name: part[:2] for name, part in rows.items()}
    cfg = EvaluateConfig(batch_size=4, toxigen_max_new_tokens=3, rtp_max_new_tokens=3, rtp_samples=1)
    shifts = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))

    def scorer(texts):
        return np.zeros(len(texts))

    def run(where):
        probed = probe_stage(model, tokenizer, probe_rows, 0, 0.25, "batched", 16, where)
        with steering(model, shifts):
            steered = evaluate(model, tokenizer, rows, {"clean": heldout}, scorer, cfg, 0.5, 0, where, seq_len=128)
        baked = bake_into_bias(model, shifts)
        loss = target_loss(baked, tokenizer, rows["toxigen"][0]["prompt"], " you")
        return probed, steered, loss

    (tmp_path / "cpu").mkdir(), (tmp_path / "elsewhere").mkdir()
    with on_second_device(model):
        elsewhere = run(tmp_path / "elsewhere")
    here = run(tmp_path / "cpu")
    assert here[0]["probe_mean_accuracy"] > 0 and "insult_probability" in here[1]
    for got, expected in zip(elsewhere[:2], here[:2]):
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert elsewhere[2] == pytest.approx(here[2], rel=1e-5)
