"""Asynchronous FedBuff: a buffer of staleness-weighted updates, flushed every K.

A frozen object holding configuration only; the buffer's state goes in and comes out
explicitly, with measurements beside it (TFF's ``MeasuredProcess``). Staleness weighting and the
server optimizer are separate pieces passed in, not flags. Memory stays O(model size): updates
are folded in one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coordinator.aggregation.accumulator import (
    AccumulatorState,
    Averaging,
    Delta,
    FloatArray,
    WeightedSum,
    Weighting,
    example_weight,
)
from coordinator.aggregation.errors import AggregationError, NonFiniteError, StaleUpdateError
from coordinator.aggregation.norms import NormMoments, l2_norm
from coordinator.aggregation.server_optimizers import OptimizerState, ServerOptimizer, ServerSGD
from coordinator.aggregation.staleness import Polynomial, StalenessFunction

_SUM = WeightedSum()


@dataclass(frozen=True)
class BufferState:
    """A FedBuff buffer between flushes: Σ nᵢ·s(τᵢ)·Δᵢ, Σ nᵢ, Σ τᵢ and norm moments.

    Arrays and scalars only, so the service can persist it and survive a restart.
    """

    sum: AccumulatorState
    num_examples: int
    staleness_total: int
    norms: NormMoments

    @property
    def count(self) -> int:
        """Updates in the buffer."""
        return self.sum.count


@dataclass(frozen=True)
class BufferMeasurements:
    """What a flush reports: updates, examples, mean staleness and the spread of norms."""

    count: int
    num_examples: int
    mean_staleness: float
    update_norm_mean: float
    update_norm_variance: float


@dataclass(frozen=True, kw_only=True)
class FedBuffBuffer:
    """Asynchronous FedBuff (Nguyen et al., AISTATS 2022): a new version every K updates.

    An update with nᵢ examples, τᵢ versions stale, enters as nᵢ·s(τᵢ)·Δᵢ; a flush divides the
    sum by Σ nᵢ. With uniform nᵢ this is the paper's (1/K)·Σ s(τᵢ)·Δᵢ, so stale updates are
    shrunk, not merely out-voted; with τ = 0 it is exactly FedAvg's example-weighted mean.
    ``weighting="uniform"`` gives every update nᵢ = 1 (DP-FedBuff: the sensitivity bound needs
    weights ≤ 1, and s(τ) ≤ 1 keeps it).
    """

    buffer_size: int
    max_staleness: int
    staleness: StalenessFunction = field(default_factory=Polynomial)
    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)
    weighting: Weighting = "examples"

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")

    def init(self, num_params: int) -> BufferState:
        """An empty buffer for a model of ``num_params`` weights."""
        return BufferState(
            sum=_SUM.start(num_params), num_examples=0, staleness_total=0, norms=NormMoments()
        )

    def accept(
        self,
        state: BufferState,
        delta: Delta,
        num_examples: int,
        staleness: int,
        *,
        norm: float | None = None,
    ) -> BufferState:
        """The buffer with one more update; the state passed in is left as it was.

        ``norm`` is the delta's norm when the caller measured it already (at upload), which
        saves a second decoding pass over an encoded delta.

        Raises :class:`StaleUpdateError` past ``max_staleness`` and :class:`AggregationError`
        for a bad update or a buffer already holding K updates (flush it first).
        """
        if staleness > self.max_staleness:
            raise StaleUpdateError(staleness, self.max_staleness)
        if self.is_full(state):
            raise AggregationError(
                f"the buffer already holds {state.count} of {self.buffer_size} updates; flush it"
            )
        weight = example_weight(num_examples, self.weighting) * self.staleness(staleness)  # n·s(τ)
        return BufferState(
            sum=_SUM.add(state.sum, delta, weight=weight),
            num_examples=state.num_examples + int(num_examples),
            staleness_total=state.staleness_total + int(staleness),
            norms=state.norms.add(l2_norm(delta) if norm is None else norm),
        )

    def is_full(self, state: BufferState) -> bool:
        """Whether the buffer holds K updates and should be flushed."""
        return state.count >= self.buffer_size

    def flush(
        self,
        weights: FloatArray,
        state: BufferState,
        optimizer_state: OptimizerState,
        *,
        average: Averaging | None = None,
    ) -> tuple[FloatArray, OptimizerState, BufferState, BufferMeasurements]:
        """Apply the buffered delta with the server optimizer and empty the buffer.

        The delta is Σ nᵢ·s(τᵢ)·Δᵢ / Σ nᵢ (with uniform weighting / K); ``average`` (uniform
        weighting only) replaces that division, noising the sum for DP first. A buffer that is
        not full may be flushed too (a deadline, a shutdown); an empty one raises
        :class:`AggregationError`.
        """
        if state.count == 0:
            raise AggregationError("the buffer is empty; there is nothing to flush")
        if average is not None and self.weighting != "uniform":
            raise AggregationError("a custom average needs uniform weighting (weight 1 each)")
        denominator = state.num_examples if self.weighting == "examples" else state.count
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            if average is None:
                delta = (state.sum.total / denominator).astype(np.float32)
            else:
                delta = average(state.sum.total, state.count)
        if not np.isfinite(delta).all():
            raise NonFiniteError("the buffered mean delta overflows float32; the model is kept")
        new_weights, new_optimizer_state = self.server_optimizer.apply(
            weights, delta, optimizer_state
        )
        measurements = BufferMeasurements(
            count=state.count,
            num_examples=state.num_examples,
            mean_staleness=state.staleness_total / state.count,
            update_norm_mean=state.norms.mean,
            update_norm_variance=state.norms.variance,
        )
        return new_weights, new_optimizer_state, self.init(state.sum.num_params), measurements
