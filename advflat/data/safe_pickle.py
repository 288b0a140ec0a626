"""Unpickling data files without running code: numpy arrays and plain containers only.

Pickled data sets (CIFAR's batch files, the pseudo-labelled TinyImages) hold dicts of numpy
arrays, lists, strings and numbers. ``pickle.load`` would call any global a file names (a planted
``__reduce__`` runs ``os.system``); ``ArraysOnly`` refuses every global except the few numpy
needs to rebuild an array, so a hostile file fails to load instead of running.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


class ArraysOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers; refuses every other global."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # pickles written by numpy 1.x
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2.x
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocol 2 (files meant for
        # Python 2); it only turns a string into bytes (codecs come from the stdlib's encodings).
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays and plain values are allowed"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # numpy 2 renamed numpy.core to numpy._core (the old name warns on access).
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def load_arrays(path: Path) -> object:
    """The object pickled in ``path``, rebuilt by ``ArraysOnly``.

    Strings of Python 2 pickles are decoded as latin1, which numpy needs for their array bytes.
    A missing or unreadable file raises ``OSError``; anything that is not such a pickle (refused
    globals, garbage, truncation) raises ``pickle.UnpicklingError`` with a one-line reason.
    """
    with path.open("rb") as handle:
        try:
            return ArraysOnly(handle, encoding="latin1").load()
        except pickle.UnpicklingError:
            raise
        except Exception as error:  # noqa: BLE001 — garbage bytes can fail anywhere in the unpickler
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "no reason"
            raise pickle.UnpicklingError(f"{type(error).__name__}: {reason}") from None
