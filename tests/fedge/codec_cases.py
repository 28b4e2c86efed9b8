"""Codecs the codec tests run over, and the variance bound each one states (docs/compression.md)."""

from __future__ import annotations

import numpy as np

from fedge.codecs import Codec, Payload, parse_codec
from fedge.codecs.sampling import KeptCoordinates, kept_in_chunk

UNBIASED = [
    "float32",
    "rot1",
    "rot2",
    "rot4",
    "rot8",
    "rot4:chunk=8",
    "eden1:chunk=1024",
    "fix4:range=8",
    "randk10",
    "randk30+rot4:chunk=16",
    "randk50+fix8:range=8,chunk=8",
]
ALL = [*UNBIASED, "fp16", "eden1"]


def value_bound(codec: Codec, payload: Payload) -> float:
    """Bound on E‖ŷ − y‖² of the value stage: Σ over rotation pieces of n·step²/4 (0 for floats).

    Stochastic rounding on a grid of step s has variance f(1 − f)s² ≤ s²/4 per value; EDEN's
    piece (low −S, step 2S) errs by n·S² − ‖y‖² ≤ n·S², the same formula.
    """
    if codec.values.chunk == 0:
        return 0.0
    view = codec.integers(payload)
    return float(np.sum(view.sizes * view.steps**2) / 4)


def variance_bound(codec: Codec, x: np.ndarray, payload: Payload) -> float:
    """Bound on E‖x̂ − x‖² for one encoding: random-k's exact variance plus the scaled value bound.

    Random-k: Σ_j (c_j/k_j − 1)‖x_j‖² (exact); the kept values' errors are scaled by c_j/k_j,
    so the value stage's bound enters times max_j (c_j/k_j)².
    """
    if codec.sparsity is None:
        return value_bound(codec, payload)
    chunk, ppm = codec.sparsity.chunk, codec.sparsity.ppm
    total, largest = 0.0, 1.0
    wide = x.astype(np.float64)
    for start in range(0, x.size, chunk):
        piece = wide[start : start + chunk]
        factor = piece.size / kept_in_chunk(piece.size, ppm)
        total += (factor - 1) * float(piece @ piece)
        largest = max(largest, factor)
    return total + largest**2 * value_bound(codec, payload)


def kept_indices(codec: Codec, length: int, seed: int) -> np.ndarray:
    """The coordinates random-k keeps for this seed (all of them without random-k)."""
    if codec.sparsity is None:
        return np.arange(length)
    return KeptCoordinates(
        length=length, chunk=codec.sparsity.chunk, ppm=codec.sparsity.ppm, seed=seed
    ).all()


def codec(name: str) -> Codec:
    """The codec of a name (a shorthand for parametrised tests)."""
    return parse_codec(name)
