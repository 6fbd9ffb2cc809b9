"""The probe stage's figure: the layer x head heat map of probe accuracies (matplotlib, loaded when drawn)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from detox.core.schema import ConfigError


def accuracy_heatmap(accuracy, path: Path | str, title: str) -> None:
    """Write a layer x head heatmap of probe accuracies (percent) to the PNG `path`."""
    from matplotlib.figure import (
        Figure,  # a bare Figure renders with Agg and leaves pyplot's backend alone
    )

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
