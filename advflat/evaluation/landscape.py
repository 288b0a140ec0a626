"""Loss landscapes: 1D curves along random or adversarial weight directions and 2D contours
along two random directions (docs/flatness.md#loss-landscapes; Li et al. 2018 style, as used by
Stutz et al.).

A direction d is normalized layer by layer so that max|d_l| = scale·max|w_l|, then the loss is
evaluated at w + t·d for t on a grid of ``steps`` points in [−1, 1]. The robust loss reruns the
attack at every point. The paper's settings (scale 0.5 for random, 0.01 for adversarial
directions, 51 points; an 11 × 11 contour) are set in conf/evaluation/paper.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn
from tqdm.auto import tqdm

from advflat.attacks.base import Attack
from advflat.attacks.inputs import validates_inputs
from advflat.core import checks
from advflat.core.io import save_json
from advflat.data.base import ImageData, select
from advflat.evaluation.flatness_losses import set_loss_value
from advflat.evaluation.landscape_plot import plot_contour, plot_curve
from advflat.evaluation.metric import Metric
from advflat.weights import Batches, RandomWeightAttack, WeightAttack, WeightLayers, perturbed

log = logging.getLogger(__name__)

# The names of the directions (what ``weight_attack`` draws them with is the config's choice:
# weight_attack=random resp. adversarial in conf/evaluation/paper.yaml).
DIRECTIONS = ("random", "adversarial")


def grid(steps: int) -> list[float]:
    """``steps`` points evenly in [−1, 1]; for odd ``steps`` the middle one is exactly 0."""
    if steps == 1:
        return [0.0]
    return [(2 * i - (steps - 1)) / (steps - 1) for i in range(steps)]


def normalize_direction(
    direction: list[Tensor], layers: WeightLayers, scale: float
) -> list[Tensor]:
    """d_l · scale·max|w_l| / max|d_l| per layer (an all-zero d_l stays zero)."""
    return [
        d * (scale * p.detach().abs().max() / d.abs().max().clamp_min(1e-12))
        for d, p in zip(direction, layers.parameters, strict=True)
    ]


def loss_along(
    model: nn.Module,
    batches: Batches,
    layers: WeightLayers,
    directions: list[list[Tensor]],
    points: Sequence[tuple[float, ...]],
    attack: Attack | None,
) -> list[float]:
    """The loss at w + Σ_k t_k·d_k for every point (t_1, ..., t_K)."""
    losses = []
    for point in tqdm(points, desc="landscape", leave=False, disable=None):
        nu = [
            sum(t * d[i] for t, d in zip(point, directions, strict=True))
            for i in range(len(layers))
        ]
        with perturbed(model, layers, nu):
            losses.append(set_loss_value(model, batches, attack))
    return losses


class _Landscape(Metric):
    """Shared: evaluation set, robust-loss attack and where files go."""

    def __init__(
        self,
        *,
        loss: str,
        attack: Attack | None,
        split: str,
        first: int | None,
        batch_size: int,
        output_dir: str | None,
    ) -> None:
        self.loss = checks.one_of("loss", loss, ("clean", "robust"))
        if loss == "robust" and attack is None:
            raise ValueError("attack is required for loss='robust' (rerun at every point)")
        self.attack = attack if loss == "robust" else None
        self.on_examples(split, first, batch_size)
        self.output_dir = output_dir

    def batches(self, data: ImageData) -> Batches:
        return list(select(data, self.split, self.first).batches(self.batch_size))

    def files(self, stem: str) -> tuple[Path, Path] | None:
        if self.output_dir is None:
            return None
        directory = Path(self.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{stem}.json", directory / f"{stem}.png"


class LossLandscape(_Landscape):
    """1D loss curve along a ``direction`` ("random" | "adversarial") of the weights.

    The direction is the ν of ``weight_attack`` (a ``RandomWeightAttack`` resp. an
    ``AdversarialWeightAttack``), normalized per layer to max|d_l| = ``scale``·max|w_l|, on a
    grid of ``steps`` points. ``direction``, ``weight_attack``, ``steps``, ``scale`` and
    ``first`` have no defaults: the paper's (scale 0.5 random, 0.01 adversarial, 51 points, the
    first 1000 test images) are set in conf/evaluation/paper.yaml. ``output_dir`` (filled in by
    the pipeline with the run directory) receives ``landscape_{direction}_{loss}.json`` and
    ``.png``. Returns ``landscape/{direction}/{loss}/max_increase`` and ``.../mean_increase``
    (over the curve, relative to the loss at the trained weights).
    """

    def __init__(
        self,
        *,
        direction: str,
        loss: str = "clean",
        steps: int,
        scale: float,
        weight_attack: WeightAttack,
        attack: Attack | None = None,
        split: str = "test",
        first: int | None,
        batch_size: int = 500,
        output_dir: str | None = None,
    ) -> None:
        super().__init__(
            loss=loss, attack=attack, split=split, first=first, batch_size=batch_size,
            output_dir=output_dir,
        )  # fmt: skip
        self.direction = checks.one_of("direction", direction, DIRECTIONS)
        self.steps = checks.at_least("steps", steps, 2)
        self.scale = checks.positive("scale", scale)
        self.weight_attack = weight_attack

    @validates_inputs("loss landscape")  # once per curve, not per point
    def curve(self, model: nn.Module, batches: Batches) -> dict:
        """{"t": grid, "loss": curve, "reference": loss at w}."""
        perturbation = self.weight_attack(model, batches)
        layers = perturbation.layers
        direction = normalize_direction(perturbation.nu, layers, self.scale)
        t = grid(self.steps)
        losses = loss_along(model, batches, layers, [direction], [(s,) for s in t], self.attack)
        reference = set_loss_value(model, batches, self.attack)
        return {"t": t, "loss": losses, "reference": reference}

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        curve = self.curve(model, self.batches(data))
        name = f"{self.direction}/{self.loss}"
        files = self.files(f"landscape_{self.direction}_{self.loss}")
        if files is not None:
            save_json(files[0], {**curve, "direction": self.direction, "scale": self.scale})
            plot_curve(files[1], curve["t"], curve["loss"], f"{name} loss landscape")
        increases = [loss - curve["reference"] for loss in curve["loss"]]
        return {
            f"landscape/{name}/max_increase": max(increases),
            f"landscape/{name}/mean_increase": sum(increases) / len(increases),
        }


class LossContour(_Landscape):
    """2D loss surface over two random directions on a ``steps`` × ``steps`` grid in [−1, 1]².

    Directions as ``LossLandscape(direction="random")`` (max|d_l| = ``scale``·max|w_l|).
    ``steps``, ``scale`` and ``first`` have no defaults: the paper's (11 × 11, scale 0.5, the
    first 1000 test images) are set in conf/evaluation/paper.yaml. Writes
    ``landscape_contour_{loss}.json``/``.png`` into ``output_dir``; returns
    ``landscape/contour/{loss}/max_increase``.
    """

    def __init__(
        self,
        *,
        loss: str = "clean",
        steps: int,
        scale: float,
        include_biases: bool = False,
        attack: Attack | None = None,
        split: str = "test",
        first: int | None,
        batch_size: int = 500,
        output_dir: str | None = None,
    ) -> None:
        super().__init__(
            loss=loss, attack=attack, split=split, first=first, batch_size=batch_size,
            output_dir=output_dir,
        )  # fmt: skip
        self.steps = checks.at_least("steps", steps, 2)
        self.scale = checks.positive("scale", scale)
        # Gaussian directions; their radius is immaterial, normalize_direction rescales them.
        self.directions = RandomWeightAttack(xi=1.0, include_biases=include_biases)

    @validates_inputs("loss contour")  # once per surface, not per point
    def surface(self, model: nn.Module, batches: Batches) -> dict:
        first, second = self.directions(model), self.directions(model)
        layers = first.layers
        directions = [normalize_direction(p.nu, layers, self.scale) for p in (first, second)]
        t = grid(self.steps)
        points = [(a, b) for a in t for b in t]
        flat = loss_along(model, batches, layers, directions, points, self.attack)
        losses = [flat[i * len(t) : (i + 1) * len(t)] for i in range(len(t))]
        return {"t": t, "loss": losses, "reference": set_loss_value(model, batches, self.attack)}

    def __call__(
        self, model: nn.Module, data: ImageData, results: dict[str, float]
    ) -> dict[str, float]:
        surface = self.surface(model, self.batches(data))
        files = self.files(f"landscape_contour_{self.loss}")
        if files is not None:
            save_json(files[0], {**surface, "scale": self.scale})
            plot_contour(files[1], surface["t"], surface["loss"], f"{self.loss} loss surface")
        highest = max(max(row) for row in surface["loss"])
        return {f"landscape/contour/{self.loss}/max_increase": highest - surface["reference"]}
