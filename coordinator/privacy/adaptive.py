"""Adaptive clipping: C follows a target quantile of update norms (Andrew et al., NeurIPS 2021).

Each device reports bᵢ = 1[‖Δᵢ‖ ≤ C] beside its clipped update. The coordinator releases the
fraction b̄ = (Σ(bᵢ − ½) + N(0, σ_b²)) / n + ½ — centring the bits makes the count's
sensitivity ½ under add-or-remove-one, as TFF's ``QuantileEstimatorQuery`` does — and moves C
geometrically toward the target quantile γ: C ← C · exp(−η (b̄ − γ)). Too many updates under C
(b̄ > γ) shrinks it; too few grows it. The count's privacy cost is part of the job's z (see
``PrivacyConfig.sum_noise_multiplier``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coordinator.privacy.noise import NoiseSource


@dataclass(frozen=True)
class ClipState:
    """The clip norm C to use for the next version, and how many updates of C were made."""

    clip_norm: float
    steps: int = 0


@dataclass(frozen=True)
class ClipMeasurements:
    """What one step saw: the noised fraction under C, and the updates counted."""

    noised_fraction: float
    n_actual: int


@dataclass(frozen=True, kw_only=True)
class AdaptiveClipper:
    """The geometric quantile update of C; state in, state out, configuration only inside."""

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clip_count_stddev: float

    def __post_init__(self) -> None:
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must lie in (0, 1), got {self.target_quantile}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if not (math.isfinite(self.clip_count_stddev) and self.clip_count_stddev > 0):
            raise ValueError(f"clip_count_stddev must be > 0, got {self.clip_count_stddev}")

    def start(self, initial_clip_norm: float) -> ClipState:
        """The state before the first version."""
        if not (math.isfinite(initial_clip_norm) and initial_clip_norm > 0):
            raise ValueError(f"initial_clip_norm must be finite and > 0, got {initial_clip_norm}")
        return ClipState(clip_norm=initial_clip_norm)

    def step(
        self, state: ClipState, *, below: int, n_actual: int, source: NoiseSource
    ) -> tuple[ClipState, ClipMeasurements]:
        """C for the next version, from ``below`` of ``n_actual`` updates having norm ≤ C."""
        if n_actual < 1 or not 0 <= below <= n_actual:
            raise ValueError(
                f"need 0 <= below <= n_actual and n_actual >= 1, got {below}/{n_actual}"
            )
        noise = float(source.generator.normal(0.0, self.clip_count_stddev))
        fraction = (below - n_actual / 2 + noise) / n_actual + 0.5
        clip_norm = state.clip_norm * math.exp(
            -self.learning_rate * (fraction - self.target_quantile)
        )
        return ClipState(clip_norm=clip_norm, steps=state.steps + 1), ClipMeasurements(
            noised_fraction=fraction, n_actual=n_actual
        )


def count_within(norms: npt.ArrayLike, clip_norm: float) -> int:
    """How many of the original (unclipped) ``norms`` are ≤ ``clip_norm``: Σ bᵢ."""
    return int(np.count_nonzero(np.asarray(norms, dtype=np.float64) <= clip_norm))
