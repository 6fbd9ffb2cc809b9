"""Inference-time intervention (ITI; Li et al. 2023, likenneth/honest_llama) on a causal LM of any
supported family (detox.core.families says which module's input holds each layer's head outputs).

ITI adds a fixed vector to the output of a few attention heads, the ones whose probes separate toxic
from clean text best: for head (layer, h) the shift is -alpha * sigma * u on that head's slice of the
`o_proj` input, u a unit direction towards toxicity and sigma the spread of the activations along u,
so alpha counts standard deviations. The minus pushes AWAY from toxicity (honest_llama pushes towards
truthfulness). The shift applies at every position, prompt and generated tokens alike.

`steering` applies the shifts with forward pre-hooks; `bake_into_bias` folds them into the projections'
biases of a copy (o_proj(x + s) = W x + W s), so the steered model runs without hooks, and
`export_baked` saves it so that it reloads with plain `from_pretrained`.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from detox.core import families
from detox.core.geometry import unit
from detox.core.schema import ConfigError
from detox.steering.config import DIRECTIONS, RANDOM_SCALINGS
from detox.steering.probe_fit import ProbeResult


def select_heads(accuracy, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs of highest validation accuracy; equal accuracies go in (layer, head) order."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.ndim != 2 or not np.isfinite(accuracy).all():
        raise ConfigError(f"select_heads: accuracy must be a finite (n_layers, n_heads) array, got {accuracy.shape}")
    n_layers, n_heads = accuracy.shape
    if not 1 <= k <= n_layers * n_heads:
        raise ConfigError(f"top_k_heads={k} must be between 1 and n_layers * n_heads = {n_layers * n_heads}")
    order = np.argsort(-accuracy.ravel(), kind="stable")[:k]  # stable: ties keep the flat (layer, head) order
    return [(int(i // n_heads), int(i % n_heads)) for i in order]


def iti_shifts(probes: ProbeResult, heads: list[tuple[int, int]], alpha: float, direction: str = "mass_mean",
               random_scaling: str = "sigma", seed: int = 0, acts=None) -> torch.Tensor:
    """The ITI shift of every layer's head-output projection input (`o_proj`'s): (n_layers, n_heads * head_dim),
    zero off the chosen heads.

    direction: mass_mean (probes.mass_mean, step probes.sigma) | probe (the unit probe weights, sigma
    measured along them on the train activations, so `acts` is needed) | random (a control: a random
    unit direction per head drawn with `seed`, scaled by the train activations' sigma along it
    ('sigma', needs `acts`) or to the norm of that head's mass-mean shift ('matched_norm')).
    acts: the (n_texts, n_layers, n_heads, head_dim) activations the probes were fitted on.
    """
    n_layers, n_heads, head_dim = probes.mass_mean.shape
    if not isinstance(alpha, (int, float)) or math.isnan(alpha) or alpha < 0:
        raise ConfigError(f"iti alpha={alpha} must be a number >= 0")
    if direction not in DIRECTIONS:
        raise ConfigError(f"iti direction={direction!r} is not one of {', '.join(DIRECTIONS)}")
    if direction == "random" and random_scaling not in RANDOM_SCALINGS:
        raise ConfigError(f"iti random_scaling={random_scaling!r} is not one of {', '.join(RANDOM_SCALINGS)}")
    if not 1 <= len(heads) <= n_layers * n_heads:
        raise ConfigError(f"iti: {len(heads)} heads chosen, need between 1 and {n_layers * n_heads}")
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ConfigError(f"iti: head ({layer}, {head}) lies outside {n_layers} layers x {n_heads} heads")
    if len(set(heads)) != len(heads):
        raise ConfigError(f"iti: heads repeat in {heads}")
    needs_acts = direction == "probe" or (direction == "random" and random_scaling == "sigma")
    if needs_acts:
        if acts is None:
            raise ConfigError(f"iti direction={direction!r} measures sigma along its direction: pass `acts`")
        acts = acts.detach().cpu().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts)
        if acts.shape[1:] != probes.mass_mean.shape or len(acts) <= probes.train_idx.max():
            raise ConfigError(f"iti: acts of shape {acts.shape} are not the activations the probes were fitted on")

    if direction == "mass_mean":
        directions = probes.mass_mean
    elif direction == "probe":
        directions = probes.probe_direction
    else:
        directions = unit(np.random.default_rng(seed).standard_normal((n_layers, n_heads, head_dim)))
    shifts = torch.zeros(n_layers, n_heads, head_dim)
    for layer, head in heads:
        u = directions[layer, head].astype(np.float64)
        if direction == "mass_mean" or random_scaling == "matched_norm":
            scale = probes.sigma[layer, head]  # the mass-mean step; a random u of this norm matches it
        else:
            scale = (acts[probes.train_idx, layer, head].astype(np.float64) @ u).std()
        shifts[layer, head] = torch.from_numpy(-alpha * scale * u)
    return shifts.reshape(n_layers, n_heads * head_dim)


def check_shifts(model, shifts: torch.Tensor) -> None:
    layers, heads, head_dim = families.head_shape(model)
    expected = (layers, heads * head_dim)
    if tuple(shifts.shape) != expected:
        raise ConfigError(f"ITI shifts of shape {tuple(shifts.shape)} do not fit the model: expected {expected}")


@contextmanager
def steering(model, shifts: torch.Tensor) -> Iterator:
    """Within the block, every layer's head-output projection (`o_proj`, `c_proj`, `dense`, `attn_out`: the
    model's family's) gets its row of `shifts` added to its input at every position.

    Works under the KV cache of `model.generate`: each new token's head outputs are shifted as it passes.
    Layers whose shift is zero get no hook (adding zero changes nothing).
    """
    check_shifts(model, shifts)
    handles = []

    def add(shift: torch.Tensor):
        def hook(module, args):
            return (args[0] + shift, *args[1:])
        return hook

    try:
        for projection, shift in zip(families.family_of(model).projections(model), shifts):
            if shift.any():
                shift = shift.to(dtype=projection.weight.dtype, device=projection.weight.device)
                handles.append(projection.register_forward_pre_hook(add(shift)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def bake_into_bias(model, shifts: torch.Tensor):
    """A deep copy of `model` with the shifts folded into its head-output projections' biases
    (bias += W shift), hook-free. A projection without a bias (OLMo, Llama, Qwen, Mistral) gets one; to
    save the copy for `from_pretrained`, use `export_baked`."""
    check_shifts(model, shifts)
    baked = copy.deepcopy(model)
    family = families.family_of(baked)
    for projection, shift in zip(family.projections(baked), shifts):
        families.add_to_bias(family, projection, shift)
    return baked


def export_baked(baked, tokenizer, out: Path) -> None:
    """Save a `bake_into_bias` model with its tokenizer so that plain `from_pretrained` reloads it, biases
    included: the family's config switch for the projection's bias is set (detox.core.families); a family
    without one (Qwen 2, Mistral) is refused in one line."""
    families.switch_bias_on(baked)
    baked.save_pretrained(out)
    tokenizer.save_pretrained(out)


SHIFTS_FILE = "shifts.npy"  # (n_layers, n_heads * head_dim) float32: what the steering hooks add
HEADS_FILE = "heads.json"


def steer_stage(probe_dir: Path, heads_k: int, alpha: float, direction: str, random_scaling: str, seed: int,
                out: Path) -> dict:
    """The steer stage: the ITI shifts of one (probes, strength, direction) and what they touch."""
    from detox.steering.probe import ACTIVATIONS_FILE, ENTANGLEMENT_FILE

    probes = ProbeResult.load(probe_dir)
    heads = select_heads(probes.accuracy, heads_k)
    needs_acts = direction == "probe" or (direction == "random" and random_scaling == "sigma")
    acts = np.load(probe_dir / ACTIVATIONS_FILE).astype(np.float32) if needs_acts else None
    shifts = iti_shifts(probes, heads, alpha, direction, random_scaling, seed, acts)
    np.save(out / SHIFTS_FILE, shifts.numpy())
    (out / HEADS_FILE).write_text(json.dumps(heads))
    rows, cols = zip(*heads)
    metrics = {"iti_heads": len(heads), "iti_heads_mean_accuracy": float(100 * probes.accuracy[rows, cols].mean()),
               "iti_shift_norm": float(shifts.norm(dim=1).square().sum().sqrt())}
    if (probe_dir / ENTANGLEMENT_FILE).exists():
        entangled = np.array(json.loads((probe_dir / ENTANGLEMENT_FILE).read_text())["max_abs_cos"])
        metrics["iti_heads_entanglement"] = float(entangled[rows, cols].mean())
    return metrics


def load_shifts(steer_dir: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(steer_dir / SHIFTS_FILE))
