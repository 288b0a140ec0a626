"""scikit-learn's bundled 8×8 handwritten digits: offline data for the quickstart and tests.

No code runs from the file: scikit-learn parses its bundled CSV with numpy.
"""

from __future__ import annotations

import torch

from advflat.data.base import Split
from advflat.data.dataset import Dataset

TRAIN_SIZE = 1500  # of 1797: the first 1500 in scikit-learn's order train, the last 297 test


class Digits(Dataset):
    """1797 grey 8×8 digits (UCI optical recognition), x (N, 1, 8, 8) in [0, 1], 10 classes.

    Options: the common subset/augmentation options of ``Dataset``.
    """

    def load(self) -> tuple[Split, Split, int]:
        from sklearn.datasets import load_digits  # here: importing sklearn takes a second

        digits = load_digits()
        # Pixel values are counts 0..16 (4×4 blocks of a 32×32 bitmap).
        x = torch.from_numpy(digits.images).to(torch.float32).div(16).unsqueeze(1)  # (N, 1, 8, 8)
        y = torch.from_numpy(digits.target).to(torch.int64)  # (N,)
        train = Split(x[:TRAIN_SIZE].clone(), y[:TRAIN_SIZE].clone())
        test = Split(x[TRAIN_SIZE:].clone(), y[TRAIN_SIZE:].clone())
        return train, test, 10
