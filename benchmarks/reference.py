"""The plain reference loop the benchmarks compare against.

Written the way published research code does it: fp32, eager, a ``DataLoader`` over CPU tensors,
and ``loss.backward()`` inside the attack loop — so every attack step also computes (and throws
away) the weight gradients. This is the baseline advflat's numbers are measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def reference_pgd(
    model: nn.Module, x: Tensor, y: Tensor, epsilon: float, step: float, steps: int
) -> Tensor:
    delta = torch.empty_like(x).uniform_(-epsilon, epsilon)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        loss.backward()  # also fills every parameter's .grad: the waste advflat avoids
        assert delta.grad is not None  # a leaf that requires grad, just backpropagated through
        with torch.no_grad():
            delta = (delta + step * delta.grad.sign()).clamp(-epsilon, epsilon)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def reference_epoch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    device: torch.device,
    *,
    epsilon: float,
    step: float,
    steps: int,
    batch_size: int,
) -> None:
    """One epoch of PGD adversarial training, the plain way."""
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        model.eval()
        adversarial = reference_pgd(model, inputs, targets, epsilon, step, steps)
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(adversarial), targets).backward()
        optimizer.step()
