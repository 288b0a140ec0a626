"""The paper's correlation plot: one point per model, coloured by family and labelled with its
hyper-parameters, the least-squares line, and r, ρ (95 % CIs) and n in the title."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from advflat.report.correlation import Correlation
from advflat.report.families import Setting
from advflat.report.plots import plt, save

# Nine markers against ten colours: (colour, marker) stays unique for 90 families.
MARKERS = "osD^vP*X<"
COLOURS = 10  # matplotlib's default cycle C0…C9


def family_style(index: int) -> tuple[str, str]:
    """The marker and colour of the index-th family (families sorted by name)."""
    return MARKERS[index % len(MARKERS)], f"C{index % COLOURS}"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    setting: Setting


@dataclass(frozen=True)
class Axes:
    x_label: str
    y_label: str
    title: str  # what is plotted against what, and at which snapshot


def coefficients(fit: Correlation) -> str:
    r_low, r_high = fit.pearson_ci
    s_low, s_high = fit.spearman_ci
    return (
        f"Pearson r = {fit.pearson:.2f} [{r_low:.2f}, {r_high:.2f}], "
        f"Spearman ρ = {fit.spearman:.2f} [{s_low:.2f}, {s_high:.2f}], n = {fit.n} models"
    )


def scatter_plot(points: list[Point], fit: Correlation, axes_text: Axes, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    families = sorted({p.setting.family for p in points})
    for index, name in enumerate(families):
        mine = [p for p in points if p.setting.family == name]
        marker, colour = family_style(index)
        axis.scatter(
            [p.x for p in mine],
            [p.y for p in mine],
            s=36,
            marker=marker,
            color=colour,
            label=name,
        )
        for p in mine:
            values = ", ".join(f"{k} = {v}" for k, v in p.setting.hyper_parameters if v != "")
            if values:
                axis.annotate(values, (p.x, p.y), fontsize=7, xytext=(4, 3),
                              textcoords="offset points")  # fmt: skip
    low, high = min(p.x for p in points), max(p.x for p in points)
    axis.plot([low, high], [fit.slope * low + fit.intercept, fit.slope * high + fit.intercept],
              color="black", lw=1, label="least-squares fit")  # fmt: skip
    axis.set_xlabel(axes_text.x_label)
    axis.set_ylabel(axes_text.y_label)
    axis.set_title(f"{axes_text.title}\n{coefficients(fit)}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, title="family", title_fontsize=8, loc="best")
    save(figure, path)
