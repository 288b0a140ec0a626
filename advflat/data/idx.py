"""The IDX format of the raw MNIST files (LeCun et al.), read with numpy alone.

Layout: two zero bytes, a type code byte, the number of dimensions d, then d big-endian uint32
sizes, then the values big-endian in C order. Files may be gzip-compressed (``.gz``).
No code runs from these files: the values are decoded by ``np.frombuffer`` alone.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from advflat.core.errors import ConfigError

# type code -> big-endian numpy dtype
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path | str) -> np.ndarray:
    """The array in an IDX file (gzip-compressed when the name ends in .gz), native byte order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"{path} could not be read ({error})") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise ConfigError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ConfigError(
            f"{path} is truncated or corrupt: shape {shape} needs {expected} bytes of values, "
            f"found {len(raw) - header}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))
