"""Packing b-bit unsigned integers (b in 1, 2, 4, 8) into bytes, first value in the low bits."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ALLOWED_BITS = (1, 2, 4, 8)


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits (the last byte zero-padded)."""
    return -(-count * bits // 8)


def pack(values: npt.NDArray[np.uint8], bits: int) -> npt.NDArray[np.uint8]:
    """``values`` (each below ``2^bits``) packed ``8 // bits`` to a byte, first in the low bits."""
    per = 8 // bits
    padded = np.zeros(packed_size(values.size, bits) * per, dtype=np.uint8)
    padded[: values.size] = values
    shifts = (bits * np.arange(per, dtype=np.uint8)).astype(np.uint8)
    packed: npt.NDArray[np.uint8] = np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1)
    return packed.astype(np.uint8)


def unpack(
    packed: npt.NDArray[np.uint8], bits: int, start: int, stop: int
) -> npt.NDArray[np.uint8]:
    """Values ``start`` to ``stop`` of a packed run, reading only the bytes that hold them."""
    per = 8 // bits
    first = start // per
    chunk = packed[first : packed_size(stop, bits)]
    shifts = (bits * np.arange(per, dtype=np.uint8)).astype(np.uint8)
    mask = np.uint8((1 << bits) - 1)
    values = ((chunk[:, None] >> shifts) & mask).reshape(-1)
    return values[start - first * per : stop - first * per]
