"""Per-head linear probing for a toxicity direction (Li et al. 2023, "Inference-Time Intervention").

For every attention head of a causal LM of any supported family (detox.core.families), the head's output
at the last token of a text (the input of the attention output projection, e.g. `o_proj`, split per head)
is the feature vector. One logistic
regression per (layer, head) is fitted on a stratified train split and scored on the validation split,
as in likenneth/honest_llama (`train_probes`: scikit-learn LogisticRegression, C=1, max_iter=1000).
Two directions per head come out: the mass-mean direction (label-0 mean to label-1 mean, label 1 =
toxic) and the unit probe weights, plus sigma, the spread of the train activations along the mass-mean
direction, which sets the step size of the intervention in detox.steering.steer.

`compare_accuracies` tests whether two models' per-head accuracy distributions differ (the paper
finds a fatter right tail for the model pre-trained with toxic data).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from detox.core.progress import progress as tqdm

from detox.core import families
from detox.core.geometry import random_entanglement_level, unit
from detox.core.schema import ConfigError

ARRAYS = ("accuracy", "mass_mean", "probe_direction", "sigma", "train_idx", "val_idx")


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


@dataclass
class ProbeResult:
    """Per-head probes of one model; arrays are indexed [layer, head]."""

    accuracy: np.ndarray  # (n_layers, n_heads) validation accuracy of the head's logistic probe, in [0, 1]
    mass_mean: np.ndarray  # (n_layers, n_heads, head_dim) unit vectors from the label-0 to the label-1 train mean
    probe_direction: np.ndarray  # (n_layers, n_heads, head_dim) unit logistic-regression weights (towards label 1)
    sigma: np.ndarray  # (n_layers, n_heads) std of the train activations projected on the mass-mean direction
    train_idx: np.ndarray  # (n_train,) sorted indices of the texts the probes were fitted on
    val_idx: np.ndarray  # (n_val,) sorted indices of the texts the accuracy was measured on
    seed: int  # seed of the stratified split (and of scikit-learn's solver)

    def save(self, folder: Path | str) -> None:
        """Write `probes.npz` (the arrays) and `probes.json` (the seed) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "probes.npz", **{name: getattr(self, name) for name in ARRAYS})
        (folder / "probes.json").write_text(json.dumps({"seed": self.seed}))

    @classmethod
    def load(cls, folder: Path | str) -> ProbeResult:
        folder = Path(folder)
        with np.load(folder / "probes.npz", allow_pickle=False) as arrays:
            fields = {name: arrays[name] for name in ARRAYS}
        return cls(**fields, seed=int(json.loads((folder / "probes.json").read_text())["seed"]))


def stratified_split(labels: np.ndarray, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices, both classes in the same proportion; at least 2 per class per part."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction} must lie strictly between 0 and 1")
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 4:
        raise ConfigError(f"the split needs at least 4 texts of each label (2 per part), got {counts[0]} "
                          f"of label 0 and {counts[1]} of label 1")
    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                      random_state=seed)
    except ValueError as err:
        raise ConfigError(f"val_fraction={val_fraction} with {len(labels)} texts: {err}") from None
    for part, idx in (("train", train), ("validation", val)):
        part_counts = np.bincount(labels[idx], minlength=2)
        if part_counts.min() < 2:
            raise ConfigError(f"val_fraction={val_fraction} leaves the {part} split with {part_counts[0]} texts "
                              f"of label 0 and {part_counts[1]} of label 1 (at least 2 of each needed)")
    return np.sort(train), np.sort(val)


def checked_inputs(acts, labels) -> tuple[np.ndarray, np.ndarray]:
    """Activations as a float32 (n, layers, heads, dim) array and labels as 0/1 integers, or a ConfigError."""
    acts = acts.detach().cpu().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts)
    labels = np.asarray(labels)
    if acts.ndim != 4:
        raise ConfigError(f"acts must have shape (n_texts, n_layers, n_heads, head_dim), got {acts.shape}")
    if labels.ndim != 1 or len(labels) != len(acts):
        raise ConfigError(f"labels must be one per text: {labels.shape} labels for {len(acts)} texts")
    if not np.isin(labels, (0, 1)).all():
        raise ConfigError(f"labels must be 0 (clean) or 1 (toxic), got values {np.unique(labels)[:10].tolist()}")
    if np.unique(labels).size < 2:
        raise ConfigError(f"labels hold one class only ({int(labels[0])}): a probe needs both")
    if not np.isfinite(acts).all():
        raise ConfigError("acts contain NaN or infinite values")
    return acts.astype(np.float32, copy=False), labels.astype(np.int64)


def probe_result(acts: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray, seed: int,
                 accuracy: np.ndarray, weights: np.ndarray) -> ProbeResult:
    """Bundle the fitted probes with the train split's mass-mean directions and spreads."""
    x, y = acts[train], labels[train]
    mass_mean = unit(x[y == 1].mean(0, dtype=np.float64) - x[y == 0].mean(0, dtype=np.float64)).astype(np.float32)
    sigma = np.einsum("nlhd,lhd->nlh", x, mass_mean).std(0, dtype=np.float64)
    return ProbeResult(accuracy=accuracy.astype(np.float64), mass_mean=mass_mean,
                       probe_direction=unit(weights).astype(np.float32), sigma=sigma, train_idx=train,
                       val_idx=val, seed=seed)


def fit_probes(acts, labels, seed: int, val_fraction: float = 0.2) -> ProbeResult:
    """One scikit-learn logistic regression (C=1, L-BFGS) per head, as honest_llama's `train_probes`."""
    acts, labels = checked_inputs(acts, labels)
    train, val = stratified_split(labels, seed, val_fraction)
    n_layers, n_heads, head_dim = acts.shape[1:]
    accuracy = np.zeros((n_layers, n_heads))
    weights = np.zeros((n_layers, n_heads, head_dim))
    for layer in tqdm(range(n_layers), desc="probes", leave=False):
        for head in range(n_heads):
            clf = LogisticRegression(random_state=seed, max_iter=1000)
            clf.fit(acts[train, layer, head], labels[train])
            accuracy[layer, head] = clf.score(acts[val, layer, head], labels[val])
            weights[layer, head] = clf.coef_[0]
    return probe_result(acts, labels, train, val, seed, accuracy, weights)


def fit_probes_batched(acts, labels, seed: int, val_fraction: float = 0.2, heads_per_chunk: int = 16,
                       max_steps: int = 200, tol: float = 1e-5, device: str = "cpu") -> ProbeResult:
    """`fit_probes` for all heads at once: the same objective, minimised batched over heads in torch.

    Each head minimises sum_i logloss(w.x_i + b, y_i) + |w|^2 / 2 (scikit-learn's C=1, intercept not
    penalised) by L-BFGS preconditioned with the exact Hessian at the start (`lbfgs_logistic`),
    `heads_per_chunk` heads at a time on `device` (on a CPU, 16 heads balance the per-step overhead
    against the chunk's size in cache, measured by benchmarks/probe_speed.py; on a GPU, take hundreds).
    `tol` bounds the final gradient per train text, 10x tighter by default than scikit-learn's rule.
    """
    acts, labels = checked_inputs(acts, labels)
    if heads_per_chunk < 1 or max_steps < 1:
        raise ConfigError(f"heads_per_chunk={heads_per_chunk} and max_steps={max_steps} must be at least 1")
    train, val = stratified_split(labels, seed, val_fraction)
    n_layers, n_heads, head_dim = acts.shape[1:]
    heads = torch.from_numpy(acts).flatten(1, 2)  # (n, layers*heads, dim), a view
    y_train = torch.from_numpy(labels[train]).float().to(device)
    y_val = torch.from_numpy(labels[val]).bool().to(device)
    accuracy, weights = [], []
    for start in tqdm(range(0, heads.shape[1], heads_per_chunk), desc="probes (batched)", leave=False):
        chunk = heads[:, start:start + heads_per_chunk].to(device)
        theta = lbfgs_logistic(with_intercept(chunk[train]), y_train, max_steps, tol)
        predictions = (with_intercept(chunk[val]) @ theta.float().unsqueeze(-1)).squeeze(-1) > 0
        accuracy.append((predictions == y_val).double().mean(1).cpu())
        weights.append(theta[:, :-1].cpu())
    accuracy = torch.cat(accuracy).reshape(n_layers, n_heads).numpy()
    weights = torch.cat(weights).reshape(n_layers, n_heads, head_dim).numpy()
    return probe_result(acts, labels, train, val, seed, accuracy, weights)


def with_intercept(rows: torch.Tensor) -> torch.Tensor:
    """(n, heads, dim) -> (heads, n, dim + 1), contiguous per head, with a trailing column of ones."""
    n, n_heads, dim = rows.shape
    x = rows.new_empty(n_heads, n, dim + 1)
    x[..., :dim] = rows.transpose(0, 1)
    x[..., dim] = 1.0
    return x


def lbfgs_logistic(x: torch.Tensor, y: torch.Tensor, max_steps: int, tol: float, memory: int = 10) -> torch.Tensor:
    """Minimiser (heads, dim + 1), float64, of each head's logistic loss with scikit-learn's C=1 penalty.

    x: (heads, n, dim + 1) float32 with the intercept column last; y: (n,) 0/1. The loss of a head is
    sum_i log(1 + exp(z_i)) - y_i z_i + |w|^2 / 2 with z = x theta; the intercept is not penalised.

    L-BFGS, preconditioned by the exact inverse Hessian at the start: there every text has the
    base-rate probability, so the Hessian is prior (1 - prior) x'x + penalty, one batched product for
    all heads. Each step then costs two passes over x (the step's scores, the new gradient); the line
    search runs on the scores z + t (x step) alone. Products with x run in float32, the rest in float64.
    A head stops once its largest gradient entry per text is below `tol`; once half the batch has
    stopped, the heads still running are gathered, so the passes follow the heads' own step counts.
    """
    n_heads, n, width = x.shape
    y = y.double()
    penalty = torch.ones(width, dtype=torch.float64, device=x.device)
    penalty[-1] = 0.0  # the intercept is not penalised, as in scikit-learn
    prior = float(y.mean())
    theta = torch.zeros(n_heads, width, dtype=torch.float64, device=x.device)
    theta[:, -1] = math.log(prior / (1 - prior))
    z = theta[:, -1:].expand(n_heads, n).clone()
    start_hessian = prior * (1 - prior) * (x.transpose(1, 2) @ x).double() + torch.diag(penalty)
    start_inverse = torch.cholesky_inverse(torch.linalg.cholesky(start_hessian))
    result = theta.clone()
    running = torch.arange(n_heads, device=x.device)  # the heads of `result` that the state below holds

    def loss(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.softplus(z) - y * z).sum(1) + 0.5 * (penalty * theta * theta).sum(1)

    def gradient(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        residual = (torch.sigmoid(z) - y).float().unsqueeze(-1)
        return (x.transpose(1, 2) @ residual).squeeze(-1).double() + penalty * theta

    def precondition(v: torch.Tensor) -> torch.Tensor:
        return (start_inverse @ v.unsqueeze(-1)).squeeze(-1)

    def descent_direction(g: torch.Tensor) -> torch.Tensor:
        """-(inverse Hessian estimate) g by the L-BFGS two-loop recursion over `history`."""
        q, coefficients = g, []
        for s, dg, rho in reversed(history):
            coefficients.append(rho * (s * q).sum(1, keepdim=True))
            q = q - coefficients[-1] * dg
        r = precondition(q)
        if history:  # rescale the preconditioner to the curvature met on the last step (Nocedal-Wright 7.20)
            s, dg, rho = history[-1]
            r = r * torch.where(rho > 0, 1 / (rho * (dg * precondition(dg)).sum(1, keepdim=True)), 1.0)
        for (s, dg, rho), coefficient in zip(history, reversed(coefficients)):
            r = r + s * (coefficient - rho * (dg * r).sum(1, keepdim=True))
        return -r

    history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (step, gradient change, 1/curvature)
    current, g = loss(z, theta), gradient(z, theta)
    stalled = torch.zeros(n_heads, dtype=torch.bool, device=x.device)  # heads no step length improves: converged to rounding
    for step_count in range(max_steps + 1):
        active = (g.abs().amax(1) / n > tol) & ~stalled
        if not active.any():
            break
        if 2 * active.sum() <= len(running):  # half the batch finished: gathering the rest pays off
            result[running] = theta
            keep = active.nonzero().squeeze(1)
            active = active[keep]
            x, z, theta, g, current, stalled, start_inverse, running = (
                t[keep] for t in (x, z, theta, g, current, stalled, start_inverse, running))
            history = [tuple(t[keep] for t in pair) for pair in history]
        if step_count == max_steps:
            warnings.warn(f"lbfgs_logistic: {int(active.sum())} heads not converged in {max_steps} steps "
                          f"(largest gradient per text {float(g.abs().amax() / n):.2e} > tol={tol})")
            break
        step = descent_direction(g) * active.unsqueeze(-1)  # finished heads wait for the next gathering
        z_step = (x @ step.float().unsqueeze(-1)).squeeze(-1).double()
        slope = (g * step).sum(1)  # directional derivative: negative along a descent step
        size = torch.ones(len(running), dtype=torch.float64, device=x.device)
        for _ in range(40):  # halve each head's step until it lowers the loss enough (Armijo)
            trial = loss(z + size.unsqueeze(-1) * z_step, theta + size.unsqueeze(-1) * step)
            too_long = trial > current + 1e-4 * size * slope
            if not too_long.any():
                break
            size = torch.where(too_long, size / 2, size)
        stalled |= too_long
        size = torch.where(too_long, 0.0, size).unsqueeze(-1)
        theta, z = theta + size * step, z + size * z_step
        new_g = gradient(z, theta)
        s, dg = size * step, new_g - g
        curvature = (s * dg).sum(1, keepdim=True)
        # A pair without positive curvature (a frozen head, rounding) would break the estimate: weight it 0.
        history = (history + [(s, dg, torch.where(curvature > 1e-12, 1 / curvature, 0.0))])[-memory:]
        current, g = loss(z, theta), new_g
    result[running] = theta
    return result


def compare_accuracies(acc_a, acc_b, seed: int = 0, n_boot: int = 10000, quantile: float = 0.9) -> dict:
    """Do the per-head probe accuracies of model a and model b come from different distributions?

    Returns (accuracies in the units given, e.g. fractions; "shift" always means b minus a):
      n_a, n_b               number of heads of each model;
      mean_a, mean_b         mean accuracy; mean_diff = mean_b - mean_a;
      u_statistic, p_value   two-sided Mann-Whitney U test of "a and b are equally distributed"
                             (U counts the pairs (a_i, b_j) with b_j > a_i, ties as one half);
      prob_b_greater         U / (n_a n_b): the chance that a random head of b beats a random head of a
                             (0.5 when neither model is ahead);
      hl_shift               Hodges-Lehmann estimate of the location shift b - a: the median of all
                             pairwise differences b_j - a_i;
      hl_ci_low, hl_ci_high  its 95 % percentile-bootstrap interval (heads of a and of b resampled
                             independently, `n_boot` times);
      q_a, q_b, q_diff       the `quantile` (default 90th percentile) of each model's accuracies and
                             q_b - q_a, a measure of the right tail (the best heads);
      q_ci_low, q_ci_high    the 95 % bootstrap interval of q_diff, from the same resamples.
    """
    a = np.asarray(acc_a, dtype=np.float64).ravel()
    b = np.asarray(acc_b, dtype=np.float64).ravel()
    for name, values in (("acc_a", a), ("acc_b", b)):
        if values.size < 2 or not np.isfinite(values).all():
            raise ConfigError(f"compare_accuracies: {name} needs at least 2 finite accuracies, got {values.size}")
    if n_boot < 1:
        raise ConfigError(f"compare_accuracies: n_boot={n_boot} must be at least 1")
    if not 0 < quantile < 1:
        raise ConfigError(f"compare_accuracies: quantile={quantile} must lie strictly between 0 and 1")
    u, p_value = mannwhitneyu(b, a, alternative="two-sided")
    rng = np.random.default_rng(seed)
    hl_boot, q_boot = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, 2 ** 22 // (a.size * b.size))  # resamples per step: bounds the pairwise-difference array
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        ra = a[rng.integers(0, a.size, (size, a.size))]
        rb = b[rng.integers(0, b.size, (size, b.size))]
        hl_boot[start:start + size] = np.median((rb[:, :, None] - ra[:, None, :]).reshape(size, -1), axis=1)
        q_boot[start:start + size] = np.quantile(rb, quantile, axis=1) - np.quantile(ra, quantile, axis=1)
    q_a, q_b = float(np.quantile(a, quantile)), float(np.quantile(b, quantile))
    return {
        "n_a": a.size, "n_b": b.size,
        "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": float(b.mean() - a.mean()),
        "u_statistic": float(u), "p_value": float(p_value), "prob_b_greater": float(u) / (a.size * b.size),
        "hl_shift": float(np.median(b[:, None] - a[None, :])),
        "hl_ci_low": float(np.percentile(hl_boot, 2.5)), "hl_ci_high": float(np.percentile(hl_boot, 97.5)),
        "q_a": q_a, "q_b": q_b, "q_diff": q_b - q_a,
        "q_ci_low": float(np.percentile(q_boot, 2.5)), "q_ci_high": float(np.percentile(q_boot, 97.5)),
    }


def accuracy_heatmap(accuracy, path: Path | str, title: str) -> None:
    """Write a layer x head heatmap of probe accuracies (percent) to the PNG `path`."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's backend alone

    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.ndim != 2:
        raise ConfigError(f"accuracy_heatmap: accuracy must be (n_layers, n_heads), got {accuracy.shape}")
    n_layers, n_heads = accuracy.shape
    fig = Figure(figsize=(1.5 + 0.35 * n_heads, 1.2 + 0.3 * n_layers))
    ax = fig.subplots()
    image = ax.imshow(100 * accuracy, origin="lower", aspect="auto", cmap="viridis")
    ax.set(xlabel="head", ylabel="layer", title=title)
    ax.set_xticks(range(0, n_heads, max(1, math.ceil(n_heads / 16))))
    ax.set_yticks(range(0, n_layers, max(1, math.ceil(n_layers / 16))))
    fig.colorbar(image, ax=ax, label="validation accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


ACCURACY_FILE = "probe_accuracy.json"  # per-head validation accuracies, read by detox-report's histograms
HEATMAP_FILE = "probe_accuracy.png"
ACTIVATIONS_FILE = "activations.npy"  # float16 (n_texts, n_layers, n_heads, head_dim): sigma along other directions
ENTANGLEMENT_FILE = "entanglement.json"
# Probe-text fields that are not latent features of the text (the synthetic world writes the rest).
NOT_FEATURES = {"text", "label", "label_p", "p_insult", "hostility", "hostile", "toxic", "cues"}


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
