"""Adaptive zeroing: an update far longer than the rest is replaced by zeros before the fold.

The reference is TFF's robust aggregator (``tff.aggregators.robust_aggregator``): zeroing in
front of clipping, its norm ``multiplier × q̂ + increment``, where q̂ tracks the 0.98 quantile
of update norms online with the geometric rule of Andrew et al. (NeurIPS 2021):
q̂ ← q̂ · exp(−η (b̄ − γ)), b̄ the fraction of this version's norms ≤ q̂. The defaults are TFF's
(q̂₀ = 10, γ = 0.98, η = ln 10, ×2, +1). A version's updates are judged against the threshold
the previous version left, so one scaled update cannot raise the bar it is judged by; every
norm, zeroed or not, then moves q̂ (TFF feeds its estimator every client's norm).

A zeroed update keeps its place and its weight in the mean, as a zero vector (TFF's
``zeroing_factory``): the version's denominator does not depend on which updates were zeroed.
Pure configuration and arithmetic on norms; the service decides from the stored raw norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ZeroingStep:
    """One version's zeroing: the threshold used, which updates it zeroed, and the next q̂."""

    threshold: float
    zeroed: tuple[bool, ...]
    next_estimate: float

    @property
    def count(self) -> int:
        """Updates zeroed in this version."""
        return sum(self.zeroed)


@dataclass(frozen=True, kw_only=True)
class Zeroing:
    """Zero updates with ‖Δ‖ > ``multiplier`` · q̂ + ``increment``; q̂ follows a quantile.

    ``learning_rate = 0`` keeps q̂ at ``initial_estimate``: a fixed zeroing norm.
    """

    initial_estimate: float = 10.0
    target_quantile: float = 0.98
    learning_rate: float = math.log(10.0)
    multiplier: float = 2.0
    increment: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_estimate) and self.initial_estimate > 0):
            raise ValueError(
                f"initial_estimate must be finite and > 0, got {self.initial_estimate}"
            )
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must lie in (0, 1), got {self.target_quantile}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError(f"learning_rate must be finite and >= 0, got {self.learning_rate}")
        if not (math.isfinite(self.multiplier) and self.multiplier > 0):
            raise ValueError(f"multiplier must be finite and > 0, got {self.multiplier}")
        if not (math.isfinite(self.increment) and self.increment >= 0):
            raise ValueError(f"increment must be finite and >= 0, got {self.increment}")

    def threshold(self, estimate: float) -> float:
        """The zeroing norm for a quantile estimate q̂: multiplier · q̂ + increment."""
        return self.multiplier * estimate + self.increment

    def step(self, estimate: float, norms: Sequence[float]) -> ZeroingStep:
        """Judge ``norms`` against ``estimate``'s threshold, and move the estimate by them.

        An empty version leaves the estimate where it was.
        """
        if not (math.isfinite(estimate) and estimate > 0):
            raise ValueError(f"estimate must be finite and > 0, got {estimate}")
        threshold = self.threshold(estimate)
        zeroed = tuple(bool(norm > threshold) for norm in norms)
        if not norms:
            return ZeroingStep(threshold, zeroed, estimate)
        below = sum(1 for norm in norms if norm <= estimate) / len(norms)
        next_estimate = estimate * math.exp(-self.learning_rate * (below - self.target_quantile))
        return ZeroingStep(threshold, zeroed, next_estimate)
