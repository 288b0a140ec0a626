"""The paper's correlation plot: one point per model, coloured by family and labelled with its
hyper-parameters, the least-squares line, and r, ρ (95 % CIs) and n in the title.

With several seeds every run is a small faint point in its family's colour and marker, and each
method trained with two or more seeds adds its mean with ± 1 sample std (n − 1) bars in x and y;
the title gives the pooled coefficients (every run of every seed) and each seed's Pearson r.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from advflat.report.correlation import Correlation
from advflat.report.families import Setting
from advflat.report.plots import plt, save
from advflat.report.seed_repeats import SeedFit
from advflat.report.table import mean_std

# Nine markers against ten colours: (colour, marker) stays unique for 90 families.
MARKERS = "osD^vP*X<"
COLOURS = 10  # matplotlib's default cycle C0…C9
TITLE_WIDTH = 110  # characters per title line at the figure's width and font size


def family_style(index: int) -> tuple[str, str]:
    """The marker and colour of the index-th family (families sorted by name)."""
    return MARKERS[index % len(MARKERS)], f"C{index % COLOURS}"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    setting: Setting
    seed: str


@dataclass(frozen=True)
class Axes:
    x_label: str
    y_label: str
    title: str  # what is plotted against what, and at which snapshot


def coefficients(fit: Correlation, counted: str = "models") -> str:
    r_low, r_high = fit.pearson_ci
    s_low, s_high = fit.spearman_ci
    return (
        f"Pearson r = {fit.pearson:.2f} [{r_low:.2f}, {r_high:.2f}], "
        f"Spearman ρ = {fit.spearman:.2f} [{s_low:.2f}, {s_high:.2f}], n = {fit.n} {counted}"
    )


def seed_pearson(seed: SeedFit) -> str:
    r = "–" if seed.fit is None else f"{seed.fit.pearson:.2f}"
    return f"seed {seed.seed}: {r} (n = {seed.n})"


def seeds_title(fit: Correlation, seeds: list[SeedFit]) -> str:
    """Pooled coefficients, then each seed's Pearson r (– where it has none)."""
    pooled = f"pooled over {len(seeds)} seeds: {coefficients(fit, 'runs')}"
    each = ", ".join(seed_pearson(seed) for seed in seeds)
    lines = textwrap.wrap(pooled, TITLE_WIDTH) + textwrap.wrap(
        f"per-seed Pearson r: {each}", TITLE_WIDTH
    )
    return "\n".join(lines)


def annotate(axis: plt.Axes, setting: Setting, x: float, y: float) -> None:
    values = ", ".join(f"{k} = {v}" for k, v in setting.hyper_parameters if v != "")
    if values:
        axis.annotate(values, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")


def draw_runs(axis: plt.Axes, points: list[Point], style: tuple[str, str], label: str) -> None:
    """One point per run (the single-seed plot)."""
    marker, colour = style
    axis.scatter([p.x for p in points], [p.y for p in points], s=36, marker=marker,
                 color=colour, label=label)  # fmt: skip
    for p in points:
        annotate(axis, p.setting, p.x, p.y)


def draw_seeds(axis: plt.Axes, points: list[Point], style: tuple[str, str], label: str) -> None:
    """Every run faint and small; each method's mean ± std over its seeds in front."""
    marker, colour = style
    axis.scatter([p.x for p in points], [p.y for p in points], s=20, marker=marker,
                 color=colour, alpha=0.5, linewidths=0)  # fmt: skip
    for setting in sorted({p.setting for p in points}, key=attrgetter("label")):
        mine = [p for p in points if p.setting == setting]
        (x, x_std), (y, y_std) = mean_std([p.x for p in mine]), mean_std([p.y for p in mine])
        axis.errorbar(x, y, xerr=x_std, yerr=y_std, fmt=marker, color=colour, ms=7,
                      elinewidth=1, capsize=2, label=label)  # fmt: skip
        label = "_nolegend_"  # one legend entry per family
        annotate(axis, setting, x, y)


def scatter_plot(
    points: list[Point], fit: Correlation, seeds: list[SeedFit], axes_text: Axes, path: Path
) -> None:
    """``seeds``: the per-seed fits when some method has several seeds, else empty."""
    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    families = sorted({p.setting.family for p in points})
    draw = draw_seeds if seeds else draw_runs
    for index, name in enumerate(families):
        draw(axis, [p for p in points if p.setting.family == name], family_style(index), name)
    low, high = min(p.x for p in points), max(p.x for p in points)
    axis.plot([low, high], [fit.slope * low + fit.intercept, fit.slope * high + fit.intercept],
              color="black", lw=1, label="least-squares fit")  # fmt: skip
    axis.set_xlabel(axes_text.x_label)
    axis.set_ylabel(axes_text.y_label)
    caption = seeds_title(fit, seeds) if seeds else coefficients(fit)
    axis.set_title(f"{axes_text.title}\n{caption}", fontsize=9)
    axis.grid(alpha=0.3)
    legend = "family: mean ± std over seeds\n(faint: each run)" if seeds else "family"
    axis.legend(fontsize=8, title=legend, title_fontsize=8, loc="best")
    save(figure, path)
