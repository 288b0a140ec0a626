"""One FAB search on a batch (see ``advflat.attacks.fab`` for the method).

Rows leave the search as soon as they have an adversarial example within ε, so later steps only
spend forward/backward passes on the examples still standing. Each step costs one forward pass
where it lands (is it adversarial, and within ε?) and one gradient where the next step starts
(after the step back, if any): a step lands beyond the boundary more often than not (η > 1
extrapolates past it), so a gradient at the landing point would mostly be thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advflat.attacks.autoattack_common import misclassified, siblings
from advflat.attacks.base import input_gradient
from advflat.attacks.fab_projection import project_onto_hyperplane_in_box
from advflat.attacks.norms import NORMS, per_example

# The dual norm measures distances to a linearised boundary: |h| / ||∇h||_q.
# Both act on the last dimension of flattened gradients.
DUAL = {"linf": lambda g: g.abs().sum(-1), "l2": lambda g: g.norm(dim=-1)}


@dataclass(frozen=True)
class FABSettings:
    epsilon: float
    norm: str
    steps: int
    alpha_max: float
    eta: float
    beta: float


def _target_margin(logits: Tensor, pairs: Tensor) -> Tensor:
    """h = z_t − z_y per example; pairs (B, 2) = (y, t)."""
    return logits.gather(1, pairs[:, 1:]).squeeze(1) - logits.gather(1, pairs[:, :1]).squeeze(1)


def _closest_boundary(model: nn.Module, x: Tensor, y: Tensor, norm: str):
    """(logits, h_s, ∇h_s) for the class s with the closest linearised boundary."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)  # (A, K)
        classes = logits.shape[1]
        grads = [
            torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < classes - 1)[0]
            for k in range(classes)
        ]  # K backward passes through one forward graph: the Jacobian of the logits
    logits = logits.detach()
    jacobian = torch.stack(grads, dim=1)  # (A, K, ...)
    rows = torch.arange(len(y), device=y.device)
    h = logits - logits[rows, y][:, None]  # (A, K)
    w = jacobian - jacobian[rows, y][:, None]
    distance = h.abs() / DUAL[norm](w.flatten(2)).clamp_min(1e-12)  # (A, K)
    distance[rows, y] = float("inf")
    s = distance.argmin(dim=1)  # (A,)
    return logits, h[rows, s], w[rows, s]


def _boundary(model: nn.Module, x: Tensor, pairs: Tensor, targeted: bool, norm: str):
    """(logits (A, K), h (A,), ∇h like x) of the boundary the step heads for."""
    if targeted:
        h, logits, w = input_gradient(model, x, pairs, _target_margin)
        return logits, h, w
    return _closest_boundary(model, x, pairs[:, 0], norm)


def _projection_step(s: dict[str, Tensor], settings: FABSettings) -> Tensor:
    """The biased, extrapolated step towards the linearised boundary."""
    norm, cur, x, h, w = settings.norm, s["cur"], s["x"], s["h"], s["w"]
    to_plane = -h  # w·δ that moves cur onto the plane h + w·(z − cur) = 0
    from_orig = -h - (w * (x - cur)).flatten(1).sum(1)  # the same plane, seen from x
    delta_cur = project_onto_hyperplane_in_box(cur, w, to_plane, norm)
    delta_orig = project_onto_hyperplane_in_box(x, w, from_orig, norm)
    size_cur, size_orig = NORMS[norm](delta_cur), NORMS[norm](delta_orig)
    alpha = (size_cur / (size_cur + size_orig).clamp_min(1e-12)).clamp(max=settings.alpha_max)
    alpha = per_example(alpha, x)
    eta = settings.eta
    return ((1 - alpha) * (cur + eta * delta_cur) + alpha * (x + eta * delta_orig)).clamp(0, 1)


def _keep(s: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    return {name: value[rows] for name, value in s.items()}


def fab_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    start: Tensor,
    settings: FABSettings,
    groups: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(x_adv, broken (B,)): x_adv is an adversarial within ε where broken, x otherwise.

    ``groups`` (B,): rows searching for the same example (FAB-T's targets); once one of them
    succeeds the others stop (not broken)."""
    out, broken = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    pairs = torch.stack([y, y if target is None else target], dim=1)  # (B, 2)
    targeted = target is not None
    index = torch.arange(len(x), device=x.device)
    s = {"index": index, "x": x, "pairs": pairs, "cur": start}
    if groups is not None:
        s["group"] = groups
    for step in range(settings.steps + 1):
        with torch.no_grad():  # where the step landed: a forward pass decides what comes next
            s["logits"] = model(s["cur"])
        s = _record(s, out, broken, settings)
        if step == settings.steps or len(s["index"]) == 0:
            break
        s["cur"] = _step_back(s, settings)
        s["logits"], s["h"], s["w"] = _boundary(
            model, s["cur"], s["pairs"], targeted, settings.norm
        )
        s = _record(s, out, broken, settings)  # a point stepped back may now lie within ε
        if len(s["index"]) == 0:
            break
        s["cur"] = _projection_step(s, settings)
    return out, broken


def _record(
    s: dict[str, Tensor], out: Tensor, broken: Tensor, settings: FABSettings
) -> dict[str, Tensor]:
    """Rows whose current point is misclassified within ε are done: store them, drop them."""
    close = NORMS[settings.norm](s["cur"] - s["x"]) <= settings.epsilon
    done = misclassified(s["logits"], s["pairs"][:, 0]) & close
    if not done.any():
        return s
    rows = s["index"][done]
    out[rows], broken[rows] = s["cur"][done], True
    if "group" in s:  # the example is broken: its other targets stop
        done = siblings(s["group"], done)
    return _keep(s, ~done)


def _step_back(s: dict[str, Tensor], settings: FABSettings) -> Tensor:
    """Adversarial but farther than ε (rows within ε have left): move towards x by β."""
    back = per_example(misclassified(s["logits"], s["pairs"][:, 0]), s["x"])
    beta = settings.beta
    return torch.where(back, (1 - beta) * s["x"] + beta * s["cur"], s["cur"])
