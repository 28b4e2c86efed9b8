"""Synchronous FedAvg: one server step from a closed round's reports.

A frozen object holding configuration only; state goes in and comes out explicitly, with
measurements beside it (TFF's ``MeasuredProcess``: ``next(state, value) -> (state, result,
measurements)``). The server optimizer is a separate piece passed in, not a flag. Memory stays
O(model size): updates are folded in one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from coordinator.aggregation.accumulator import (
    Averaging,
    Delta,
    FloatArray,
    WeightedSum,
    Weighting,
    example_weight,
)
from coordinator.aggregation.errors import AggregationError
from coordinator.aggregation.norms import NormMoments, l2_norm
from coordinator.aggregation.server_optimizers import OptimizerState, ServerOptimizer, ServerSGD

_SUM = WeightedSum()


@dataclass(frozen=True)
class RoundMeasurements:
    """What a synchronous round reports: updates, examples, and the spread of update norms."""

    count: int
    num_examples: int
    update_norm_mean: float
    update_norm_variance: float


@dataclass(frozen=True, kw_only=True)
class FedAvgRound:
    """Synchronous FedAvg (McMahan et al., AISTATS 2017) with a pluggable server optimizer.

    The example-weighted mean Σnᵢ·Δᵢ / Σnᵢ is the pseudo-gradient (``weighting="uniform"``:
    ΣΔᵢ / n, as DP-FedAvg needs); ``ServerSGD()`` (η = 1) gives plain FedAvg, ``FedAdam(...)``
    gives Reddi et al.'s FedAdam, and so on.
    """

    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)
    weighting: Weighting = "examples"

    def step(
        self,
        weights: FloatArray,
        optimizer_state: OptimizerState,
        updates: Iterable[tuple[Delta, int] | tuple[Delta, int, float]],
        *,
        average: Averaging | None = None,
    ) -> tuple[FloatArray, OptimizerState, RoundMeasurements]:
        """Aggregate ``(delta, num_examples)`` pairs, streamed, and take one server step.

        A third item, the delta's norm measured already (at upload), saves measuring it again
        (for an encoded delta, a second decoding pass).

        ``updates`` may be a generator reading blobs one at a time: only the running sum is
        kept. ``average`` (uniform weighting only) turns the sum and the count into the mean
        delta, noised for DP; without it the mean is the plain weighted one. Raises
        :class:`AggregationError` for a bad update or when there are none.
        """
        if average is not None and self.weighting != "uniform":
            raise AggregationError("a custom average needs uniform weighting (weight 1 each)")
        total = _SUM.start(optimizer_state.num_params)
        norms, examples = NormMoments(), 0
        for update in updates:
            delta, num_examples = update[0], update[1]
            weight = example_weight(num_examples, self.weighting)
            total = _SUM.add(total, delta, weight=weight)
            norm = update[2] if len(update) == 3 else l2_norm(delta)
            norms, examples = norms.add(norm), examples + int(num_examples)
        if total.count == 0:
            raise AggregationError("a round needs at least one update to aggregate")
        mean = _SUM.mean(total) if average is None else average(total.total, total.count)
        new_weights, new_state = self.server_optimizer.apply(weights, mean, optimizer_state)
        measurements = RoundMeasurements(
            count=total.count,
            num_examples=examples,
            update_norm_mean=norms.mean,
            update_norm_variance=norms.variance,
        )
        return new_weights, new_state, measurements
