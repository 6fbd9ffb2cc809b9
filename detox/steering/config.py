"""The steering stages' options: the probe stage's (`ProbeConfig`) and the steer stage's (`SteerConfig`).

method=iti composes both into the options of the `iti` config group (`detox.methods.iti.ItiOptions`,
conf/iti/mid.yaml documents each field). Light: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from detox.core.schema import choice, number

DIRECTIONS = ("mass_mean", "probe", "random")  # toxic mean minus clean mean | the probe's weights | a random control
RANDOM_SCALINGS = ("sigma", "matched_norm")  # the random control's step: sigma along it | the mass-mean shift's norm
SOLVERS = ("auto", "sklearn", "batched")  # a scikit-learn probe per head | all heads at once in torch | auto: batched from 64 heads


@dataclass
class ProbeConfig:
    """The probe stage: one per base model, shared by every steering of it."""

    val_fraction: float = number(0.2, "(0, 1)")  # probe texts held out to score each head's probe
    solver: str = choice("auto", *SOLVERS)  # how the per-head probes are fitted (same objective either way)
    batch_size: int = number(64, "[1, inf)")  # texts per forward pass when reading the heads' activations


@dataclass
class SteerConfig:
    """The steer stage's shifts: -alpha * sigma * direction on each of the top_k_heads heads."""

    alpha: float = number(8.0, "[0, inf)")  # the shift in units of the activations' std along the direction
    top_k_heads: int = number(4, "[1, inf)")  # heads steered, the best by probe accuracy
    direction: str = choice("mass_mean", *DIRECTIONS)  # the direction each steered head is moved away along
    random_scaling: str = choice("sigma", *RANDOM_SCALINGS)  # direction=random only: how far the random control moves
