"""The model zoo (docs/models.md): every model takes (B, C, H, W) in [0, 1] and returns logits (B,
K).

Constructors share the runtime arguments the pipeline passes from the dataset (``num_classes``,
``input_shape``, ``mean``, ``std``) and the config keys ``normalization`` and ``activation``.
``Normalized`` wraps a model from elsewhere whose input normalisation lived in its data pipeline.
"""

from advflat.models.base import ImageClassifier
from advflat.models.layers import (
    ACTIVATIONS,
    NORMALIZATION_TYPES,
    NORMALIZATIONS,
    InputNormalization,
    ReBN,
)
from advflat.models.lenet import LeNet
from advflat.models.mlp import MLP
from advflat.models.normalized import Normalized
from advflat.models.preact_resnet import PreActResNet18
from advflat.models.resnet import ResNet18
from advflat.models.simplenet import SimpleNet
from advflat.models.wide_resnet import WideResNet

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "NORMALIZATIONS",
    "NORMALIZATION_TYPES",
    "ImageClassifier",
    "InputNormalization",
    "LeNet",
    "Normalized",
    "PreActResNet18",
    "ReBN",
    "ResNet18",
    "SimpleNet",
    "WideResNet",
]
