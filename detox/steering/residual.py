"""Steering on the residual stream, the rivals of ITI's per-head shifts: contrastive activation addition
(CAA; Rimsky et al. 2024, "DiffMean" in AxBench, Wu et al. 2025) and directional ablation (Arditi et al.
2024), on a causal LM of any supported family (detox.core.families says where its decoder blocks are).

Both read one thing of the base model: at every layer, the difference of the mean residual stream
(the decoder block's output) of the toxic and of the clean probe texts at their last token
(`residual_stage`, keyed like ITI's probes by the base model and the probe texts). Then, at each
chosen layer (every position, prompt and generated tokens alike):
* `adding`: CAA adds `-alpha x` the difference of means (alpha 1 moves the mean toxic text's state
  onto the mean clean one's at that layer), pushing away from toxicity;
* `ablating`: the component along the unit difference-of-means direction is projected out,
  h <- h - (h.u) u, so the layer's output carries none of it (no strength).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from detox.core import families
from detox.core.geometry import unit
from detox.core.progress import progress as tqdm
from detox.core.schema import ConfigError

DIFF_MEANS_FILE = "diff_means.npy"  # (n_layers, d_model) float32: mean toxic - mean clean residual, per layer


def _with_hidden(output, hidden: torch.Tensor):
    """A block's output with its hidden states replaced (a tensor, or a tuple led by one)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def _block_hooks(model, layers: dict[int, object]) -> Iterator:
    """Forward hooks `layers[i]` (module, args, output) -> output on the model's decoder blocks."""
    blocks = families.family_of(model).blocks(model)
    for i in layers:
        if not 0 <= i < len(blocks):
            raise ConfigError(f"layer {i} does not exist: the model has {len(blocks)} layers (0..{len(blocks) - 1})")
    handles = [blocks[i].register_forward_hook(hook) for i, hook in layers.items()]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def residual_activations(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Every decoder block's output at each text's last token: (n_texts, n_layers, d_model), float32.
    Texts are prefixed with the end-of-document token and right-padded, as the head probes' are
    (detox.steering.probe.head_activations)."""
    if not texts:
        raise ConfigError("residual_activations: no texts")
    n_layers = len(families.family_of(model).blocks(model))
    state: dict = {}
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def hook(module, args, output):
            hidden = _hidden(output)
            captured[layer] = hidden[torch.arange(hidden.shape[0]), state["last"]].float().cpu()
        return hook

    rows = []
    with _block_hooks(model, {i: capture(i) for i in range(n_layers)}):
        for start in tqdm(range(0, len(texts), batch_size), desc="residual activations", leave=False):
            batch = [tokenizer.eos_token + t for t in texts[start:start + batch_size]]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, padding_side="right",
                               add_special_tokens=False).to(model.device)
            state["last"] = inputs["attention_mask"].sum(1) - 1
            model(**inputs, use_cache=False)
            rows.append(torch.stack([captured[i] for i in range(n_layers)], dim=1))
    return torch.cat(rows)


def diff_means(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per layer, the mean activation of the toxic texts (label 1) minus that of the clean ones."""
    labels = np.asarray(labels)
    if not ((labels == 1).any() and (labels == 0).any()):
        raise ConfigError("the probe texts need both labels (0 clean, 1 toxic) for a difference of means")
    acts = np.asarray(acts, dtype=np.float64)
    return acts[labels == 1].mean(0) - acts[labels == 0].mean(0)


def chosen(layers: list[int], n_layers: int) -> list[int]:
    """The layers a steering touches: `layers`, or every layer when it is empty."""
    return list(layers) if layers else list(range(n_layers))


@contextmanager
def adding(model, vectors: dict[int, torch.Tensor]) -> Iterator:
    """Within the block, `vectors[i]` is added to decoder block i's output at every position (CAA)."""
    def add(vector: torch.Tensor):
        def hook(module, args, output):
            hidden = _hidden(output)
            return _with_hidden(output, hidden + vector.to(dtype=hidden.dtype, device=hidden.device))
        return hook

    with _block_hooks(model, {i: add(v) for i, v in vectors.items()}):
        yield model


@contextmanager
def ablating(model, directions: dict[int, torch.Tensor]) -> Iterator:
    """Within the block, the component along the unit vector `directions[i]` is removed from decoder
    block i's output at every position: h <- h - (h.u) u."""
    def project_out(u: torch.Tensor):
        def hook(module, args, output):
            hidden = _hidden(output)
            d = u.to(dtype=hidden.dtype, device=hidden.device)
            return _with_hidden(output, hidden - (hidden @ d)[..., None] * d)
        return hook

    with _block_hooks(model, {i: project_out(u) for i, u in directions.items()}):
        yield model


def load_diff_means(residual_dir: Path) -> np.ndarray:
    return np.load(residual_dir / DIFF_MEANS_FILE)


def caa_vectors(means: np.ndarray, layers: list[int], alpha: float) -> dict[int, torch.Tensor]:
    """CAA's additions at strength `alpha`: -alpha x the difference of means, at each chosen layer."""
    return {i: torch.from_numpy(-alpha * means[i]).float() for i in chosen(layers, len(means))}


def ablation_directions(means: np.ndarray, layers: list[int]) -> dict[int, torch.Tensor]:
    """The unit difference-of-means direction at each chosen layer."""
    return {i: torch.from_numpy(unit(means[i])).float() for i in chosen(layers, len(means))}


def residual_stage(model, tokenizer, rows: list[dict], batch_size: int, out: Path) -> dict:
    """The residual stage: the per-layer difference of means of the probe texts, and per layer how far
    apart the two classes' means lie in units of the spread along that direction (the separation)."""
    labels = np.array([row["label"] for row in rows])
    acts = residual_activations(model, tokenizer, [row["text"] for row in rows], batch_size).numpy()
    means = diff_means(acts, labels)
    np.save(out / DIFF_MEANS_FILE, means.astype(np.float32))
    along = np.einsum("nld,ld->nl", acts.astype(np.float64), unit(means))
    separation = np.abs(along[labels == 1].mean(0) - along[labels == 0].mean(0)) / along.std(0).clip(1e-12)
    (out / "separation.json").write_text(json.dumps(separation.tolist()))
    return {"residual_best_separation": float(separation.max()), "residual_best_layer": int(separation.argmax()),
            "residual_layers": int(len(means))}
