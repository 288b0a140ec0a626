"""AutoAttack's wall clock and robust error on fixed models, for comparing two implementations.

``time_autoattack(attack, model, x, y)`` runs ``attack.run`` once and reports its seconds, its
robust error and the cumulative error after each component: the same seed, model and examples
must give the same robust error whichever implementation runs, only faster.

Two cases, both at reduced or full budgets that run on a CPU in about a minute or two:

- ``quickstart``: the digits LeNet of ``advflat experiment=quickstart`` (a checkpoint), on the
  297 test digits at the quickstart's ε = 0.2, with the full published budgets;
- ``resnet``: an untrained ResNet-18 on a few random 32×32 images labelled with its own
  predictions (every example starts robust), at a small ε and cut budgets.

From a checkout, ``python -m benchmarks.autoattack_speed --case quickstart --checkpoint
RUN/checkpoints/final.pt`` times the working tree; ``--code DIR`` times the ``advflat`` found
in DIR instead (e.g. an earlier commit exported with ``git archive``), so two implementations
run the same script.

``--peer torchattacks`` (quickstart case) instead runs advflat's standard AutoAttack and the
budget-matched torchattacks ensemble back to back on the same digits (``--first``, at
``--epsilon``) and reports seconds, forward/backward passes per component, both robust errors
and the speed-up (see ``benchmarks.autoattack_peer``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.timing import timed


def time_autoattack(
    attack: Any, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500
) -> dict[str, float]:
    """``seconds``, ``robust_error`` and ``error/<component>`` of one ``attack.run``."""
    outcome: dict[str, Any] = {}
    seconds = timed(lambda: outcome.update(result=attack.run(model, x, y, batch_size)), x.device)
    result = outcome["result"]
    errors = {f"error/{name}": value for name, value in result.errors().items()}
    return {"seconds": seconds, "robust_error": result.robust_error, **errors}


def quickstart_case(checkpoint: str, version: str) -> dict[str, float]:
    from advflat.attacks.autoattack import AutoAttack
    from advflat.data import Digits
    from advflat.training.checkpoint import load_model

    model = load_model(checkpoint).eval()
    test = Digits().test
    attack = AutoAttack(epsilon=0.2, version=version, seed=0)
    return time_autoattack(attack, model, test.x, test.y)


def peer_case(checkpoint: str, epsilon: float, first: int | None) -> dict[str, Any]:
    """Ours against the budget-matched torchattacks ensemble on the first test digits."""
    from advflat.data import Digits
    from advflat.training.checkpoint import load_model
    from benchmarks.autoattack_peer import compare

    model = load_model(checkpoint).eval()
    test = Digits().test
    return compare(model, test.x[:first], test.y[:first], epsilon)


def resnet_case(images: int, budget: float) -> dict[str, float]:
    """ResNet-18 (untrained, seed 0) at ε = 0.5/255 with steps and queries × ``budget``."""
    from advflat.attacks.apgd import APGD, APGDTargeted
    from advflat.attacks.autoattack import AutoAttack
    from advflat.attacks.fab import FABTargeted
    from advflat.attacks.square import Square
    from advflat.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18(num_classes=10, input_shape=[3, 32, 32]).eval()
    x = torch.rand((images, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    epsilon, steps = 0.5 / 255, max(round(100 * budget), 1)
    queries = max(round(5000 * budget), 2)
    components = [
        APGD(epsilon=epsilon, steps=steps, restarts=1),
        APGDTargeted(epsilon=epsilon, steps=steps, n_target_classes=9, restarts=1),
        FABTargeted(epsilon=epsilon, steps=steps, n_target_classes=9, restarts=1),
        Square(epsilon=epsilon, queries=queries, restarts=1, rescale_schedule=False),
    ]
    attack = AutoAttack(epsilon=epsilon, version="custom", attacks=components, seed=0)
    return time_autoattack(attack, model, x, y)


def use_code(root: str) -> None:
    """Import ``advflat`` from ``root`` instead of the installed (editable) package."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder)]
    sys.path.insert(0, root)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["quickstart", "resnet"], required=True)
    parser.add_argument("--checkpoint", help="the quickstart model (checkpoints/final.pt)")
    parser.add_argument("--version", default="standard", help="AutoAttack version (quickstart)")
    parser.add_argument("--images", type=int, default=8, help="ResNet-18 images")
    parser.add_argument("--budget", type=float, default=0.1, help="ResNet-18 budget fraction")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--code", help="a folder holding the advflat package to time")
    parser.add_argument("--peer", choices=["torchattacks"], help="compare with this library")
    parser.add_argument("--epsilon", type=float, default=0.2, help="ε with --peer")
    parser.add_argument("--first", type=int, help="the first test digits with --peer (all)")
    args = parser.parse_args(argv)
    if args.code:
        use_code(args.code)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any]
    if args.case == "quickstart":
        if not args.checkpoint:
            parser.error("--checkpoint is required with --case quickstart")
        if args.peer:
            result = peer_case(args.checkpoint, args.epsilon, args.first)
        else:
            result = quickstart_case(args.checkpoint, args.version)
    elif args.peer:
        parser.error("--peer runs with --case quickstart only")
    else:
        result = resnet_case(args.images, args.budget)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
