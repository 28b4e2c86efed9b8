"""Update norms: ‖Δ‖₂ in float64, and their running moments for a version's measurements."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.aggregation.accumulator import FloatArray


def l2_norm(delta: FloatArray) -> float:
    """‖Δ‖₂, summed in float64: what the aggregators measure and clipping scales to."""
    return float(np.linalg.norm(delta.astype(np.float64)))


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
