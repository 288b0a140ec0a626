"""Draw loss landscapes as PNG (matplotlib's object API: no pyplot, no global backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_curve(path: Path, t: list[float], losses: list[float], title: str) -> None:
    figure = Figure(figsize=(5, 3.5))
    axis = figure.add_subplot()
    axis.plot(t, losses, marker=".")
    axis.set_xlabel("step along the normalized direction")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_contour(
    path: Path, t: list[float], losses: list[list[float]], title: str, levels: int = 20
) -> None:
    """``losses[i][j]`` is the loss at (t[i] along direction 1, t[j] along direction 2)."""
    figure = Figure(figsize=(5, 4.5))
    axis = figure.add_subplot()
    grid = np.asarray(losses).T  # contour wants rows = y (direction 2)
    filled = axis.contourf(t, t, grid, levels=levels, cmap="viridis")
    axis.contour(t, t, grid, levels=levels, colors="white", linewidths=0.4)
    figure.colorbar(filled, ax=axis, label="loss")
    axis.plot([0], [0], marker="x", color="red")  # the trained weights
    axis.set_xlabel("direction 1")
    axis.set_ylabel("direction 2")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
