"""The two compositions the service runs: a synchronous FedAvg round and a FedBuff buffer.

Each is a frozen object holding configuration only; state goes in and comes out explicitly,
with measurements beside it (TFF's ``MeasuredProcess``: ``next(state, value) -> (state,
result, measurements)``). Weighting, staleness, clipping and the server optimizer are separate
pieces passed in, not flags. Memory stays O(model size): updates are folded in one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from coordinator.aggregation.accumulator import (
    AccumulatorState,
    FloatArray,
    WeightedSum,
    check_vector,
)
from coordinator.aggregation.errors import AggregationError, NonFiniteError, StaleUpdateError
from coordinator.aggregation.server_optimizers import OptimizerState, ServerOptimizer, ServerSGD
from coordinator.aggregation.staleness import Polynomial, StalenessFunction

_SUM = WeightedSum()


def clip_by_norm(delta: FloatArray, max_norm: float) -> tuple[FloatArray, bool]:
    """Scale ``delta`` down to L2 norm ``max_norm`` if it is longer; say whether it was.

    Per-update clipping bounds any one device's influence (DP-FedAvg, McMahan et al., ICLR
    2018). Compose it in front of ``accept`` or ``step``; a delta within bounds is returned as is.
    """
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be finite and > 0, got {max_norm}")
    check_vector(delta, num_params=int(np.size(delta)))
    norm = _l2_norm(delta)
    if norm <= max_norm:
        return delta, False
    return (delta.astype(np.float64) * (max_norm / norm)).astype(np.float32), True


def _l2_norm(delta: FloatArray) -> float:
    """‖Δ‖₂, summed in float64."""
    return float(np.linalg.norm(delta.astype(np.float64)))


def _check_num_examples(num_examples: int) -> None:
    """Refuse an example count that is not a positive integer (it weighs the update)."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise AggregationError(f"num_examples must be an integer, got {num_examples!r}")
    if num_examples < 1:
        raise AggregationError(f"num_examples must be >= 1, got {num_examples}")


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

    The example-weighted mean Σnᵢ·Δᵢ / Σnᵢ is the pseudo-gradient; ``ServerSGD()`` (η = 1)
    gives plain FedAvg, ``FedAdam(...)`` gives Reddi et al.'s FedAdam, and so on.
    """

    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)

    def step(
        self,
        weights: FloatArray,
        optimizer_state: OptimizerState,
        updates: Iterable[tuple[FloatArray, int]],
    ) -> tuple[FloatArray, OptimizerState, RoundMeasurements]:
        """Aggregate ``(delta, num_examples)`` pairs, streamed, and take one server step.

        ``updates`` may be a generator reading blobs one at a time: only the running sum is
        kept. Raises :class:`AggregationError` for a bad update or when there are none.
        """
        total = _SUM.start(optimizer_state.num_params)
        norms, examples = NormMoments(), 0
        for delta, num_examples in updates:
            _check_num_examples(num_examples)
            total = _SUM.add(total, delta, weight=float(num_examples))
            norms, examples = norms.add(_l2_norm(delta)), examples + int(num_examples)
        if total.count == 0:
            raise AggregationError("a round needs at least one update to aggregate")
        new_weights, new_state = self.server_optimizer.apply(
            weights, _SUM.mean(total), optimizer_state
        )
        measurements = RoundMeasurements(
            count=total.count,
            num_examples=examples,
            update_norm_mean=norms.mean,
            update_norm_variance=norms.variance,
        )
        return new_weights, new_state, measurements


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
    """

    buffer_size: int
    max_staleness: int
    staleness: StalenessFunction = field(default_factory=Polynomial)
    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)

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
        self, state: BufferState, delta: FloatArray, num_examples: int, staleness: int
    ) -> BufferState:
        """The buffer with one more update; the state passed in is left as it was.

        Raises :class:`StaleUpdateError` past ``max_staleness`` and :class:`AggregationError`
        for a bad update or a buffer already holding K updates (flush it first).
        """
        if staleness > self.max_staleness:
            raise StaleUpdateError(staleness, self.max_staleness)
        if self.is_full(state):
            raise AggregationError(
                f"the buffer already holds {state.count} of {self.buffer_size} updates; flush it"
            )
        _check_num_examples(num_examples)
        weight = float(num_examples) * self.staleness(staleness)  # n·s(τ) — FedBuff
        return BufferState(
            sum=_SUM.add(state.sum, delta, weight=weight),
            num_examples=state.num_examples + int(num_examples),
            staleness_total=state.staleness_total + int(staleness),
            norms=state.norms.add(_l2_norm(delta)),
        )

    def is_full(self, state: BufferState) -> bool:
        """Whether the buffer holds K updates and should be flushed."""
        return state.count >= self.buffer_size

    def flush(
        self, weights: FloatArray, state: BufferState, optimizer_state: OptimizerState
    ) -> tuple[FloatArray, OptimizerState, BufferState, BufferMeasurements]:
        """Apply the buffered delta with the server optimizer and empty the buffer.

        A buffer that is not full may be flushed too (a deadline, a shutdown); an empty one
        raises :class:`AggregationError`.
        """
        if state.count == 0:
            raise AggregationError("the buffer is empty; there is nothing to flush")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            delta = (state.sum.total / state.num_examples).astype(np.float32)
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
