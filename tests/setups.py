"""Hand-built training objects for the tests: every scientific value is given explicitly here
(the constructors take none by default; the YAML holds the paper's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advflat.training import Trainer
from advflat.training.losses import (
    AdversarialLoss,
    CleanLoss,
    Loss,
    MARTLoss,
    RotationLoss,
    SemiSupervisedLoss,
    TRADESLoss,
)
from advflat.training.losses.base import Stats
from advflat.training.schedules import Constant
from advflat.training.updates import AWP, EntropySGD, OptimizerStep, Update
from advflat.weights import AdversarialWeightAttack, RandomWeightAttack

# The stored config of a tiny MLP on (1, 4, 4) inputs, as checkpoints carry it.
MLP_CONFIG = {
    "_target_": "advflat.models.MLP",
    "num_classes": 3,
    "input_shape": [1, 4, 4],
    "mean": None,
    "std": None,
    "hidden": [16],
}

AT = {
    "fraction": 1.0,
    "prevent_label_leaking": False,
    "ignore_incorrect": False,
    "friendly_tau": None,
}
PLAIN = {
    "label_smoothing": 0.0,
    "label_noise": 0.0,
    "label_noise_per_example": False,
    "ema_decay": None,
    "weight_clipping": None,
    "epsilon_warmup_epochs": 0,
}


def sgd(lr: float = 0.1, momentum: float = 0.9) -> Any:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


def at_loss(**options: Any) -> AdversarialLoss:
    return AdversarialLoss(**{**AT, **options})


def trades_loss(beta: float = 6.0) -> TRADESLoss:
    return TRADESLoss(beta=beta)


def mart_loss(beta: float = 6.0) -> MARTLoss:
    return MARTLoss(beta=beta)


# The paper's rotation self-supervision: half rotated copies, half of every batch attacked.
ROTATION = {
    "rotated_share": 0.5,
    "head_hidden": 256,
    "rotate_after_augmentation": False,
    "fraction": 0.5,
}


def rotation_loss(rotation_weight: float = 0.5, **options: Any) -> RotationLoss:
    return RotationLoss(rotation_weight=rotation_weight, **{**AT, **ROTATION, **options})


def semi_loss(extra: Any, unlabelled_share: float = 0.7, **options: Any) -> SemiSupervisedLoss:
    return SemiSupervisedLoss(extra=extra, unlabelled_share=unlabelled_share, **{**AT, **options})


def awp_update(**options: Any) -> AWP:
    return AWP(
        **{
            "population": 1,
            "curriculum": None,
            "gradient_clipping": 0.05,
            "gradient_clipping_mode": "elementwise",
            **options,
        }
    )


def adversarial_weights(
    xi: float = 0.005, steps: int = 1, lr: float | None = None, **options: Any
) -> AdversarialWeightAttack:
    lr = xi if lr is None else lr
    return AdversarialWeightAttack(
        **{"xi": xi, "steps": steps, "lr": lr, "init": "uniform_norm", **options}
    )


def random_weights(xi: float = 0.01, sampler: str = "sphere") -> RandomWeightAttack:
    return RandomWeightAttack(xi=xi, sampler=sampler)


def entropy_update(**options: Any) -> EntropySGD:
    defaults = {
        "inner_steps": 1,
        "inner_lr": 0.1,
        "noise": 1e-4,
        "coupling": 1e-4,
        "scoping": 1e-3,
        "mean_decay": 0.75,
    }
    return EntropySGD(**{**defaults, **options})


def trainer(
    loss: Loss | None = None, update: Update | None = None, cls: type = Trainer, **options: Any
) -> Trainer:
    """A Trainer with the tests' small defaults (1 epoch, batch 32, SGD lr 0.1, constant lr)."""
    base = {"epochs": 1, "batch_size": 32, "optimizer": sgd(), "scheduler": Constant(), **PLAIN}
    loss = CleanLoss() if loss is None else loss
    update = OptimizerStep() if update is None else update
    return cls(loss=loss, update=update, **{**base, **options})


def step(method: Trainer, model: nn.Module, x: Tensor, y: Tensor) -> Stats:
    """One update of a prepared trainer on one batch."""
    return method.update.step(method.context, method.loss, model, x, y)


def loss_of(method: Trainer, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Stats]:
    """The trainer's loss of one batch (through its context)."""
    inputs = method.loss.inputs(method.context, model, x, y)
    outputs = method.loss.training_module(model).train()(inputs)  # the train-mode forward
    return method.loss.on(method.context, outputs, y)
