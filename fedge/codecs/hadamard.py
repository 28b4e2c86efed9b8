"""Randomized Hadamard rotation in power-of-two pieces, so no vector is padded to 2^k.

A vector of ``m`` coordinates is cut into full pieces of ``chunk`` (a power of two) and a tail
of ``m mod chunk``, which is cut by its binary digits (37 = 32 + 4 + 1): every piece is a power
of two, the pieces cover the vector exactly, and the rotation stays orthonormal with not one
padded coordinate. A piece is rotated as ``y = H D x`` (D: random signs from the task seed, H:
the normalised Walsh-Hadamard matrix, Suresh et al., ICML 2017); the inverse is ``x = D H y``
because H is symmetric and orthogonal. Small tail pieces are barely mixed (a piece of one
coordinate is only a sign flip); the codecs stay unbiased on them, only less accurate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fedge.codecs.streams import SignStream

FloatT = TypeVar("FloatT", np.float32, np.float64)
# Full pieces are inverted this many coordinates at a time (at least one piece): O(block) memory.
DECODE_BLOCK = 1 << 16


def tail_pieces(m: int, chunk: int) -> list[int]:
    """Sizes of the pieces after the full ones: the binary digits of ``m mod chunk``."""
    rest = m % chunk
    return [1 << bit for bit in range(chunk.bit_length() - 1, -1, -1) if rest >> bit & 1]


def num_pieces(m: int, chunk: int) -> int:
    """How many pieces a vector of ``m`` coordinates is rotated in."""
    return m // chunk + (m % chunk).bit_count()


def fwht(block: npt.NDArray[FloatT]) -> npt.NDArray[FloatT]:
    """The normalised fast Walsh-Hadamard transform of each (power-of-two) row, as a new array."""
    rows, n = block.shape
    src = block.copy()
    dst = np.empty_like(src)
    half = 1
    while half < n:  # butterflies on pairs (j, j + half) of each run of 2·half, all rows at once
        s = src.reshape(rows, n // (2 * half), 2, half)
        d = dst.reshape(rows, n // (2 * half), 2, half)
        np.add(s[:, :, 0], s[:, :, 1], out=d[:, :, 0])
        np.subtract(s[:, :, 0], s[:, :, 1], out=d[:, :, 1])
        src, dst = dst, src
        half *= 2
    src *= src.dtype.type(1.0 / np.sqrt(n))
    return src


def rotate(
    vector: npt.NDArray[np.float32], *, seed: int, chunk: int
) -> list[npt.NDArray[np.float32]]:
    """``vector`` rotated: one ``(n_full, chunk)`` block, then a ``(1, n)`` block per tail piece."""
    signs = SignStream(seed)
    full = vector.size // chunk
    head = vector[: full * chunk].reshape(full, chunk)
    blocks = [fwht(head * signs.take(full, chunk))]
    start = full * chunk
    for n in tail_pieces(vector.size, chunk):
        piece = vector[start : start + n].reshape(1, n)
        blocks.append(fwht(piece * signs.take(1, n)))
        start += n
    return blocks


def piece_blocks(m: int, chunk: int) -> Iterator[tuple[int, int, int]]:
    """``(first piece, rows, piece size)`` of each block a decoder inverts, in order."""
    full = m // chunk
    per_block = max(1, DECODE_BLOCK // chunk)
    for first in range(0, full, per_block):
        yield first, min(per_block, full - first), chunk
    for offset, n in enumerate(tail_pieces(m, chunk)):
        yield full + offset, 1, n


def unrotate(rotated: npt.NDArray[np.float64], signs: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """``D H y`` for each row of ``rotated`` with its signs: the inverse of :func:`rotate`."""
    result: npt.NDArray[np.float64] = fwht(rotated) * signs
    return result
