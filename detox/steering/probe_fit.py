"""The per-head logistic probes of the probe stage (detox.steering.probe), fitted two ways.

One logistic regression per (layer, head) is fitted on a stratified train split of the texts' head
activations and scored on the validation split, as in likenneth/honest_llama (`train_probes`:
scikit-learn LogisticRegression, C=1, max_iter=1000): `fit_probes` is that loop, the reference;
`fit_probes_batched` minimises the same objective for many heads at once in torch (`lbfgs_logistic`, a
batched L-BFGS written here), for models with many heads. Two directions per head come out: the
mass-mean direction (label-0 mean to label-1 mean, label 1 = toxic) and the unit probe weights, plus
sigma, the spread of the train activations along the mass-mean direction, which sets the step size of
the intervention in detox.steering.steer.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from detox.core.geometry import unit
from detox.core.progress import progress as tqdm
from detox.core.schema import ConfigError

ARRAYS = ("accuracy", "mass_mean", "probe_direction", "sigma", "train_idx", "val_idx")


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
