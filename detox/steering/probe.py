"""Per-head linear probing for a toxicity direction (Li et al. 2023, "Inference-Time Intervention").

For every attention head of a causal LM of any supported family (detox.core.families), the head's output
at the last token of a text (the input of the attention output projection, e.g. `o_proj`, split per head)
is the feature vector (`head_activations`). The probe stage fits one logistic regression per (layer,
head) on them (detox.steering.probe_fit: the probes, their mass-mean and probe directions and sigma),
draws the accuracy heat map (detox.steering.plots) and, where the texts carry their other latent
features, measures how entangled the toxicity direction is with them (`entanglement_map`, in each
head's whitened coordinates). The comparison of two models' accuracy distributions (the paper finds a
fatter right tail for the model pre-trained with toxic data) is detox.core.stats.compare_accuracies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from detox.core import families
from detox.core.geometry import random_entanglement_level, unit
from detox.core.progress import progress as tqdm
from detox.core.schema import ConfigError
from detox.steering.plots import accuracy_heatmap
from detox.steering.probe_fit import fit_probes, fit_probes_batched

ACCURACY_FILE = "probe_accuracy.json"  # per-head validation accuracies, read by detox-report's histograms
HEATMAP_FILE = "probe_accuracy.png"
ACTIVATIONS_FILE = "activations.npy"  # float16 (n_texts, n_layers, n_heads, head_dim): sigma along other directions
ENTANGLEMENT_FILE = "entanglement.json"
# Probe-text fields that are not latent features of the text (the synthetic world writes the rest).
NOT_FEATURES = {"text", "label", "label_p", "p_insult", "hostility", "hostile", "toxic", "cues"}


@torch.no_grad()
def head_activations(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Per-head attention outputs at each text's last token: (n_texts, n_layers, n_heads, head_dim), float32.

    The features are the input of every layer's attention output projection (the heads' outputs,
    concatenated; which module that is, is the model's family's: detox.core.families), taken at the last
    real token. Texts are prefixed with the end-of-document token, as every document
    in this project starts, and right-padded, so a text's positions and attention match an unpadded run.
    """
    if not texts:
        raise ConfigError("head_activations: no texts")
    if batch_size < 1:
        raise ConfigError(f"head_activations: batch_size={batch_size} must be at least 1")
    if tokenizer.eos_token is None or tokenizer.pad_token is None:
        raise ConfigError("head_activations: the tokenizer needs an eos_token and a pad_token")
    n_layers, n_heads, head_dim = families.head_shape(model)
    out = torch.empty(len(texts), n_layers, n_heads, head_dim, dtype=torch.float32)
    batch_state: dict = {}  # the running batch's rows of `out` and last-token positions, read by the hooks

    def capture(layer: int):
        def hook(module, args):
            heads = args[0][torch.arange(args[0].shape[0]), batch_state["last"]]
            out[batch_state["rows"], layer] = heads.reshape(-1, n_heads, head_dim).float().cpu()
        return hook

    handles = [projection.register_forward_pre_hook(capture(i))
               for i, projection in enumerate(families.family_of(model).projections(model))]
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="head activations", leave=False):
            batch = [tokenizer.eos_token + t for t in texts[start:start + batch_size]]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, padding_side="right",
                               add_special_tokens=False).to(model.device)
            batch_state["rows"] = slice(start, start + len(batch))
            batch_state["last"] = inputs["attention_mask"].sum(1) - 1
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return out


def feature_directions(acts: np.ndarray, rows: list[dict]) -> dict[str, np.ndarray]:
    """One-vs-rest mass-mean direction of every value of every latent feature the rows carry
    (e.g. topic=harbor): (n_layers, n_heads, head_dim) each, unit length."""
    directions, mean = {}, acts.mean(0, dtype=np.float64)
    for feature in sorted({k for row in rows for k in row} - NOT_FEATURES):
        values = np.array([str(row.get(feature)) for row in rows])
        for value in np.unique(values):
            if 0 < (values == value).sum() < len(rows):
                directions[f"{feature}={value}"] = unit(acts[values == value].mean(0, dtype=np.float64) - mean)
    return directions


def whiten(acts: np.ndarray) -> np.ndarray:
    """Each head's activations (..., n_texts, dim along the last two axes after moving texts first:
    input (n, layers, heads, dim)) centred and with identity covariance (a small ridge keeps dead
    dimensions finite). In these coordinates sampling noise is isotropic: raw activations are so
    anisotropic that any two class-mean differences, even of shuffled labels, point along the few
    high-variance directions and look entangled (|cos| near 1)."""
    x = np.moveaxis(acts.astype(np.float64), 0, -2)  # (layers, heads, n, dim)
    x = x - x.mean(-2, keepdims=True)
    values, vectors = np.linalg.eigh(np.einsum("lhnd,lhne->lhde", x, x) / (x.shape[-2] - 1))
    scale = np.sqrt(values + 1e-6 * values.max(-1, keepdims=True))[..., None, :]
    return np.moveaxis(np.einsum("lhnd,lhde->lhne", x, vectors) / scale, -2, 0)


def entanglement_map(acts: np.ndarray, labels: np.ndarray, rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    """(n_layers, n_heads): at each head, the largest |cos| between the toxicity direction (mass-mean)
    and any other latent feature value's one-vs-rest direction, all in the head's whitened coordinates;
    and the names of those feature values."""
    white = whiten(acts)
    toxic = unit(white[labels == 1].mean(0) - white[labels == 0].mean(0))
    directions = feature_directions(white, rows)
    others = np.stack(list(directions.values()), axis=2)  # (layers, heads, n_others, dim)
    return np.abs(np.einsum("lhod,lhd->lho", others, toxic)).max(-1), sorted(directions)


def probe_stage(model, tokenizer, rows: list[dict], seed: int, val_fraction: float, solver: str,
                batch_size: int, out: Path) -> dict:
    """The probe stage: activations of the labelled texts, per-head probes, directions and sigma,
    the accuracy heat map, and, where the texts carry their other latent features, the entanglement
    of the toxicity direction with them (beside the level of random directions in as many dimensions).

    solver: sklearn (a loop of scikit-learn probes, the reference) | batched (all heads at once in
    torch, for large models) | auto (batched from 64 heads on)."""
    labels = np.array([row["label"] for row in rows])
    acts = head_activations(model, tokenizer, [row["text"] for row in rows], batch_size).numpy()
    n_layers, n_heads, head_dim = acts.shape[1:]
    batched = solver == "batched" or (solver == "auto" and n_layers * n_heads >= 64)
    probes = (fit_probes_batched if batched else fit_probes)(acts, labels, seed, val_fraction)
    probes.save(out)
    np.save(out / ACTIVATIONS_FILE, acts.astype(np.float16))
    (out / ACCURACY_FILE).write_text(json.dumps(probes.accuracy.tolist()))
    accuracy_heatmap(probes.accuracy, out / HEATMAP_FILE, f"probe accuracy, {len(rows)} texts")
    best = np.unravel_index(probes.accuracy.argmax(), probes.accuracy.shape)
    metrics = {"probe_best_accuracy": float(100 * probes.accuracy.max()),
               "probe_mean_accuracy": float(100 * probes.accuracy.mean()),
               "probe_best_layer": int(best[0]), "probe_best_head": int(best[1]), "probe_texts": len(rows)}
    if "label_p" in rows[0]:  # sampled labels: no reader of the text can beat this
        label_p = np.array([row["label_p"] for row in rows])[probes.val_idx]
        metrics["probe_label_ceiling"] = float(100 * np.maximum(label_p, 1 - label_p).mean())
    if set(rows[0]) - NOT_FEATURES:  # the texts carry their other latent features
        entangled, features = entanglement_map(acts, labels, rows)
        (out / ENTANGLEMENT_FILE).write_text(json.dumps({"features": features, "max_abs_cos": entangled.tolist()}))
        metrics.update({"entanglement_best_head": float(entangled[best]),
                        "entanglement_mean": float(entangled.mean()),
                        "entanglement_random_level": random_entanglement_level(head_dim, len(features))})
    return metrics
