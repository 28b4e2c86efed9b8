"""Coordinate-wise robust aggregation: the trimmed mean and the median of a version's updates.

Yin et al. (ICML 2018, "Byzantine-robust distributed learning"): for each coordinate, sort the
k updates' values and average all but the ⌊βk⌋ largest and ⌊βk⌋ smallest (trimmed mean), or
take the middle one (median). A minority of arbitrary updates then moves no coordinate further
than the honest updates' spread allows, where one of them moves a plain mean without bound.

Each update counts once: example counts would let one device buy its way past the trim, so a
job that asks for these rules weighs uniformly (``coordinator.config`` refuses otherwise).
FedBuff's staleness weight s(τ) ≤ 1 still scales each delta before the sort.

These rules need every update of the version at once, which the streaming sum never holds:
the service reads the version's stored blobs into one k × P float32 array at the close, so
memory is O(k · model size) per round or buffer (K = 10 updates of a 100k-weight model:
4 MB), and the streaming path is untouched when no robust rule is configured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from coordinator.aggregation.accumulator import FloatArray, check_vector, check_weight
from coordinator.aggregation.errors import AggregationError, NonFiniteError
from coordinator.aggregation.norms import NormMoments, l2_norm
from coordinator.aggregation.server_optimizers import OptimizerState, ServerOptimizer

RobustRule = Literal["trimmed_mean", "median"]


@dataclass(frozen=True)
class RobustMeasurements:
    """What a robust fold reports: updates, values trimmed per side, and the norms' spread."""

    count: int
    trimmed_per_side: int
    update_norm_mean: float
    update_norm_variance: float


@dataclass(frozen=True, kw_only=True)
class CoordinateWise:
    """A coordinate-wise robust rule: ``trimmed_mean`` (trim β per side) or ``median``."""

    rule: RobustRule
    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.rule not in ("trimmed_mean", "median"):
            raise ValueError(f"rule must be 'trimmed_mean' or 'median', got {self.rule!r}")
        if not (math.isfinite(self.trim_fraction) and 0 <= self.trim_fraction < 0.5):
            raise ValueError(f"trim_fraction must lie in [0, 0.5), got {self.trim_fraction}")

    def trimmed_per_side(self, count: int) -> int:
        """Values cut from each end of a coordinate's k values: ⌊βk⌋ (0 for the median)."""
        return math.floor(self.trim_fraction * count) if self.rule == "trimmed_mean" else 0

    def combine(self, stack: FloatArray) -> FloatArray:
        """The rule applied to each column of a k × P ``stack`` (sorted in place)."""
        if stack.ndim != 2 or stack.shape[0] < 1:
            raise AggregationError(f"need a k x P stack with k >= 1, got shape {stack.shape}")
        if self.rule == "median":
            median: FloatArray = np.median(stack, axis=0, overwrite_input=True).astype(np.float32)
            return median
        count, cut = stack.shape[0], self.trimmed_per_side(stack.shape[0])
        stack.sort(axis=0)
        kept = stack[cut : count - cut]
        mean: FloatArray = (kept.sum(axis=0, dtype=np.float64) / kept.shape[0]).astype(np.float32)
        return mean

    def fold(
        self, deltas: Iterable[tuple[FloatArray, float]], *, count: int, num_params: int
    ) -> tuple[FloatArray, RobustMeasurements]:
        """The robust aggregate of ``count`` pairs ``(delta, scale)``, each delta × its scale.

        ``deltas`` may be a generator reading blobs one at a time; they are copied into one
        preallocated k × P array (the only copy held). Raises :class:`AggregationError` for a
        bad delta or a count that does not match.
        """
        if count < 1:
            raise AggregationError("a robust fold needs at least one update")
        stack = np.empty((count, num_params), dtype=np.float32)
        norms, row = NormMoments(), 0
        for delta, scale in deltas:
            if row == count:
                raise AggregationError(f"more than the {count} updates announced")
            check_vector(delta, num_params=num_params)
            check_weight(scale)
            stack[row] = delta if scale == 1.0 else delta * np.float32(scale)
            norms, row = norms.add(l2_norm(delta)), row + 1
        if row != count:
            raise AggregationError(f"{row} updates arrived of the {count} announced")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            mean = self.combine(stack)
        if not np.isfinite(mean).all():
            raise NonFiniteError("the robust aggregate overflows float32")
        measurements = RobustMeasurements(
            count=count,
            trimmed_per_side=self.trimmed_per_side(count),
            update_norm_mean=norms.mean,
            update_norm_variance=norms.variance,
        )
        return mean, measurements

    def step(
        self,
        weights: FloatArray,
        optimizer_state: OptimizerState,
        deltas: Iterable[tuple[FloatArray, float]],
        *,
        count: int,
        server_optimizer: ServerOptimizer,
    ) -> tuple[FloatArray, OptimizerState, RobustMeasurements]:
        """Fold ``deltas`` robustly and take one server step with the aggregate."""
        mean, measurements = self.fold(deltas, count=count, num_params=optimizer_state.num_params)
        new_weights, new_state = server_optimizer.apply(weights, mean, optimizer_state)
        return new_weights, new_state, measurements
