"""Datasets as in-memory tensors in [0, 1] (NCHW), plus augmentations and extra data.

Each ``conf/dataset/*.yaml`` builds one of the dataset classes below (an ``ImageData``);
``augmentation`` nodes build one of the augmentation callables.
"""

from advflat.data.arrays import Arrays
from advflat.data.augmentation import AutoAugmentCutout, CropFlip, Cutout
from advflat.data.base import ImageData, Split, select
from advflat.data.dataset import Dataset
from advflat.data.digits import Digits
from advflat.data.folder import Folder
from advflat.data.hdf5 import HDF5
from advflat.data.pseudo_labelled import PseudoLabelled
from advflat.data.torchvision_sets import CIFAR10, CIFAR100, MNIST, SVHN

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "HDF5",
    "MNIST",
    "SVHN",
    "Arrays",
    "AutoAugmentCutout",
    "CropFlip",
    "Cutout",
    "Dataset",
    "Digits",
    "Folder",
    "ImageData",
    "PseudoLabelled",
    "Split",
    "select",
]
