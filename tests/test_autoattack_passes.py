"""The pass counter the AutoAttack comparison reports work with: forward and backward calls
and rows, on a model small enough to count by hand."""

from __future__ import annotations

import torch
from torch import nn

from advflat.attacks.base import cross_entropy, input_gradient
from benchmarks.passes import PassCounter


def test_pass_counter_counts_forward_and_backward_calls_and_rows():
    torch.manual_seed(0)
    counter = PassCounter(nn.Linear(4, 3))
    with torch.no_grad():
        counter(torch.rand(5, 4))  # a forward pass only
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    input_gradient(counter, torch.rand(7, 4), labels, cross_entropy)  # forward and backward
    assert counter.counts() == {
        "forward_calls": 2,
        "forward_rows": 12,
        "backward_calls": 1,
        "backward_rows": 7,
    }
    counter.reset()
    assert set(counter.counts().values()) == {0}
