"""The shared-seed random streams both ends regenerate: rotation signs and kept coordinates.

Only what numpy promises to keep stable across versions is used: ``SeedSequence`` and the raw
64-bit outputs of ``PCG64`` (NEP 19 lets ``Generator`` methods change their streams, so a device
and a coordinator on different numpy releases could disagree about ``Generator.choice``). Each
stream reads whole words, in order, so a decoder that walks the vector piece by piece draws
exactly what an encoder that drew everything at once did.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ROTATION = 1  # spawn keys: independent streams from one task seed
SPARSIFICATION = 2
MAX_SEED = 2**64 - 1


def bit_generator(seed: int, stream: int) -> np.random.PCG64:
    """The PCG64 of ``stream`` for task seed ``seed`` (an integer in ``[0, 2^64)``)."""
    return np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream,)))


class SignStream:
    """Random ±1 signs, each piece of ``n`` signs taken from ``ceil(n / 64)`` fresh words."""

    def __init__(self, seed: int) -> None:
        self._bits = bit_generator(seed, ROTATION)

    def take(self, rows: int, n: int) -> npt.NDArray[np.float32]:
        """Signs for ``rows`` consecutive pieces of ``n`` coordinates, shape ``(rows, n)``."""
        words = -(-n // 64)
        raw = self._bits.random_raw(rows * words).astype("<u8").view(np.uint8)
        bits = np.unpackbits(raw.reshape(rows, words * 8), axis=1, bitorder="little")[:, :n]
        return (1.0 - 2.0 * bits).astype(np.float32)  # bit 1 -> -1


def keys(bits: np.random.PCG64, count: int) -> npt.NDArray[np.uint64]:
    """``count`` uniform 64-bit keys, one word each."""
    return np.asarray(bits.random_raw(count), dtype=np.uint64)
