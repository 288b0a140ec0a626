import pytest
import torch

from advflat.training.labels import flipped_labels
from advflat.training.schedules import Constant, Cosine, Cyclic, MultiStep


def lrs(schedule, steps_per_epoch: int, epochs: int, base: float = 0.1) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = schedule(optimizer, steps_per_epoch, epochs)
    seen = []
    for _ in range(steps_per_epoch * epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_multistep_decays_at_milestone_epochs_when_stepped_per_batch():
    seen = lrs(MultiStep(milestones=[2, 3], gamma=0.1), steps_per_epoch=4, epochs=4)
    assert seen[:8] == pytest.approx([0.1] * 8)
    assert seen[8:12] == pytest.approx([0.01] * 4)
    assert seen[12:] == pytest.approx([0.001] * 4)


def test_cyclic_goes_zero_peak_zero():
    seen = lrs(Cyclic(peak_lr=0.2, base_lr=0.1, cycle_epochs=4), steps_per_epoch=10, epochs=4)
    assert seen[0] == pytest.approx(0.0)
    assert max(seen) == pytest.approx(0.2)
    assert seen.index(max(seen)) == 20  # the middle of the cycle
    assert seen[-1] == pytest.approx(0.2 / 20)  # one step before the end


def test_cosine_and_constant_endpoints():
    assert lrs(Constant(), 2, 3) == pytest.approx([0.1] * 6)
    seen = lrs(Cosine(final=0.0), steps_per_epoch=50, epochs=2)
    assert seen[0] == pytest.approx(0.1)
    assert seen[50] == pytest.approx(0.05)


def test_bad_schedule_values_are_rejected_with_the_key_name():
    with pytest.raises(ValueError, match="^gamma must be > 0"):
        MultiStep(milestones=[2], gamma=0.0)
    with pytest.raises(ValueError, match="^peak_lr must be > 0"):
        Cyclic(peak_lr=-1.0, base_lr=0.1, cycle_epochs=None)


def test_per_example_flips_move_the_requested_share_to_other_classes_reproducibly():
    y = torch.randint(0, 10, (20000,), generator=torch.Generator().manual_seed(1))
    noisy = flipped_labels(y, 0.3, 10, torch.Generator().manual_seed(2))
    flipped = noisy != y  # a flip always lands on another class: the share is τ itself
    assert flipped.float().mean().item() == pytest.approx(0.3, abs=0.015)  # ~5σ at n = 20000
    assert noisy.min() >= 0 and noisy.max() <= 9
    again = flipped_labels(y, 0.3, 10, torch.Generator().manual_seed(2))
    assert torch.equal(noisy, again)  # drawn once per example from the seed
    assert torch.equal(flipped_labels(y, 0.0, 10, torch.Generator()), y)
