"""Counting a model's passes, so two attack implementations can be compared on work done
rather than only on (load-sensitive) seconds.

``PassCounter(model)`` is a drop-in ``nn.Module``: every forward call counts one forward pass
and its rows (examples), every backward through it (a gradient reaching its input) one
backward pass and its rows. ``counts()`` reads them, ``reset()`` starts afresh.
"""

from __future__ import annotations

from torch import Tensor, nn


class PassCounter(nn.Module):
    """``model`` with its forward and backward passes counted (calls and rows of each)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.reset()
        self.register_full_backward_hook(self._count_backward)

    def reset(self) -> None:
        self.forward_calls = self.forward_rows = 0
        self.backward_calls = self.backward_rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_calls += 1
        self.forward_rows += len(x)
        return self.model(x)

    def _count_backward(
        self,
        module: nn.Module,
        grad_input: tuple[Tensor | None, ...],
        grad_output: tuple[Tensor, ...],
    ) -> None:
        # A full backward hook fires once per backward pass that reaches the model's input.
        self.backward_calls += 1
        self.backward_rows += len(grad_output[0])

    def counts(self) -> dict[str, int]:
        return {
            "forward_calls": self.forward_calls,
            "forward_rows": self.forward_rows,
            "backward_calls": self.backward_calls,
            "backward_rows": self.backward_rows,
        }
