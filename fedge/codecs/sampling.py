"""Random-k sparsification with a shared seed: the kept coordinates are regenerated, never sent.

The vector is cut into chunks of ``chunk`` coordinates (the last one shorter); chunk j of
``c_j`` coordinates keeps ``k_j = ceil(c_j · ppm / 10^6)`` of them, the ``k_j`` smallest of
``c_j`` fresh 64-bit keys (a stable sort, so the choice is defined by the keys alone). A kept
value is scaled by ``c_j / k_j`` on decode, which makes the estimate unbiased (Konečný et al.
2016; Suresh et al. 2017): ``E‖x̂ − x‖² = Σ_j (c_j/k_j − 1)‖x_j‖²``. Exactly k per chunk (not a
coin per coordinate) keeps the kept count, and so the body's length, known from the header.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedge.codecs.streams import SPARSIFICATION, bit_generator, keys

PPM = 1_000_000
IntArray = npt.NDArray[np.int64]


def kept_in_chunk(size: int, ppm: int) -> int:
    """How many of a chunk's ``size`` coordinates are kept at ``ppm`` parts per million."""
    return min(size, -(-size * ppm // PPM))


def kept_count(length: int, *, chunk: int, ppm: int) -> int:
    """How many coordinates of a vector of ``length`` are kept (and so sent)."""
    full, rest = divmod(length, chunk)
    return full * kept_in_chunk(chunk, ppm) + kept_in_chunk(rest, ppm)


def _choose(bits: np.random.PCG64, rows: int, size: int, kept: int) -> IntArray:
    """Sorted kept offsets within each of ``rows`` chunks of ``size``, shape ``(rows, kept)``."""
    drawn = keys(bits, rows * size).reshape(rows, size)
    chosen = np.argsort(drawn, axis=1, kind="stable")[:, :kept]
    chosen.sort(axis=1)
    return chosen.astype(np.int64)


class KeptCoordinates:
    """The kept coordinates of one task seed, for a vector of ``length`` (encode or decode side)."""

    def __init__(self, *, length: int, chunk: int, ppm: int, seed: int) -> None:
        self._length, self._chunk, self._ppm = length, chunk, ppm
        self._bits = bit_generator(seed, SPARSIFICATION)
        self._next_chunk = 0
        self._base = 0  # sub-vector position of self._indices[0]
        self._indices: IntArray = np.zeros(0, np.int64)
        self._factors = np.zeros(0, np.float64)

    def all(self) -> IntArray:
        """Every kept index, in order (the encoder's view: O(length) at once, vectorised)."""
        full, rest = divmod(self._length, self._chunk)
        kept = kept_in_chunk(self._chunk, self._ppm)
        head = _choose(self._bits, full, self._chunk, kept)
        head += (self._chunk * np.arange(full, dtype=np.int64))[:, None]
        tail = _choose(self._bits, 1, rest, kept_in_chunk(rest, self._ppm)) + full * self._chunk
        self._next_chunk = full + 1
        return np.concatenate([head.reshape(-1), tail.reshape(-1)])

    def take(self, start: int, stop: int) -> tuple[IntArray, npt.NDArray[np.float64]]:
        """Indices and ``c_j / k_j`` factors of kept values ``start:stop``, asked for in order.

        The decoder's view: only the chunks these values fall in are generated (O(chunk)).
        """
        if start != self._base:
            raise ValueError(f"kept values must be taken in order: at {self._base}, asked {start}")
        while self._base + self._indices.size < stop:
            self._grow()
        cut = stop - self._base
        indices, factors = self._indices[:cut], self._factors[:cut]
        self._indices, self._factors = self._indices[cut:], self._factors[cut:]
        self._base = stop
        return indices, factors

    def _grow(self) -> None:
        first = self._next_chunk * self._chunk
        size = min(self._chunk, self._length - first)
        if size <= 0:
            raise ValueError("asked for more kept values than the vector has")
        kept = kept_in_chunk(size, self._ppm)
        chosen = _choose(self._bits, 1, size, kept).reshape(-1) + first
        self._indices = np.concatenate([self._indices, chosen])
        self._factors = np.concatenate([self._factors, np.full(kept, size / kept)])
        self._next_chunk += 1
