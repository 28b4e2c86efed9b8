"""Update norms: ‖Δ‖₂ in float64, and their running moments for a version's measurements."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coordinator.aggregation.accumulator import Delta, FloatArray
from fedge.codecs import Payload


def l2_norm(delta: Delta) -> float:
    """‖Δ‖₂, summed in float64: what the aggregators measure and clipping scales to.

    A payload's is its decoded update's, summed piece by piece (no float copy of it).
    """
    if isinstance(delta, Payload):
        return magnitudes(delta).norm
    return float(np.linalg.norm(delta.astype(np.float64)))


@dataclass(frozen=True)
class Magnitudes:
    """‖Δ‖₂ and max |Δᵢ| of a decoded update: the checks an upload needs, in one pass."""

    norm: float
    max_abs: float


def magnitudes(delta: Delta) -> Magnitudes:
    """The norm and largest magnitude of ``delta``; a payload's streamed over its pieces."""
    if not isinstance(delta, Payload):
        largest = float(np.max(np.abs(delta))) if delta.size else 0.0
        return Magnitudes(norm=update_norm(delta), max_abs=largest)
    squares, largest = 0.0, 0.0
    for _, values in delta.codec.pieces(delta):
        if values.size:
            squares += float(np.einsum("i,i->", values, values))
            largest = max(largest, float(np.max(np.abs(values))))
    return Magnitudes(norm=math.sqrt(squares), max_abs=largest)


def update_norm(delta: FloatArray) -> float:
    """‖Δ‖₂ of an upload, summed in float64 without BLAS, for the check on the request path.

    ``np.linalg.norm``'s threaded dot has a long latency tail on a busy server; this is the
    norm an upload is stored with and checked against ``max_update_norm``.
    """
    return float(np.sqrt(np.einsum("i,i->", delta, delta, dtype=np.float64)))


@dataclass(frozen=True)
class NormMoments:
    """Count, Σ‖Δ‖ and Σ‖Δ‖² of update norms: mean and variance without keeping the norms."""

    count: int = 0
    total: float = 0.0
    total_squares: float = 0.0

    def add(self, norm: float) -> NormMoments:
        """These moments with one more norm."""
        return NormMoments(self.count + 1, self.total + norm, self.total_squares + norm * norm)

    @property
    def mean(self) -> float:
        """Mean norm (0 when empty)."""
        return self.total / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        """Population variance E[‖Δ‖²] − E[‖Δ‖]², clamped at 0 against rounding."""
        if not self.count:
            return 0.0
        return max(self.total_squares / self.count - self.mean**2, 0.0)
