"""A streaming weighted sum of update deltas: O(model size) memory, however many updates.

Updates arrive one at a time (the service streams them from stored blobs), so the sum is
folded in as they come, never stacked, unlike Flower's list-based ``aggregate``. The running sum
is kept in float64: a float32 sum of thousands of updates loses the low bits of each, and the
result would depend on arrival order. Only the mean is rounded back to float32.

An update is a float32 vector or an encoded :class:`~fedge.codecs.Payload` (a compressed
upload, a view of the received bytes): a payload is decoded block by block straight into the
new sum, so no float copy of it is ever made (docs/compression.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.errors import AggregationError, NonFiniteError
from fedge.codecs import CodecError, Payload

FloatArray = npt.NDArray[np.float32]
SumArray = npt.NDArray[np.float64]
ArrayT = TypeVar("ArrayT", bound=npt.NDArray[Any])
# A delta as the aggregators take it: float32, or still encoded (decoded as it is added).
Delta = FloatArray | Payload

# An update's weight in a mean: its example count (FedAvg, McMahan et al. 2017) or 1 each.
Weighting = Literal["examples", "uniform"]

# ``average(total, count)``: the mean delta of ``count`` updates whose float64 sum is ``total``.
# The service passes one that adds DP noise to the sum first (DP-FedAvg, McMahan et al., ICLR
# 2018); aggregation itself stays numpy and knows nothing of privacy.
Averaging = Callable[[SumArray, int], FloatArray]


def check_vector(vector: FloatArray, *, num_params: int, what: str = "delta") -> None:
    """Refuse anything but a finite 1-D float32 vector of ``num_params`` elements."""
    if not isinstance(vector, np.ndarray):
        raise AggregationError(f"{what} must be a numpy array, got {type(vector).__name__}")
    if vector.dtype != np.float32:
        raise AggregationError(f"{what} must be float32, got {vector.dtype}")
    if vector.shape != (num_params,):
        raise AggregationError(
            f"{what} has shape {vector.shape}, expected ({num_params},) for this model"
        )
    if not np.isfinite(vector).all():
        bad = int(np.size(vector) - np.count_nonzero(np.isfinite(vector)))
        raise AggregationError(f"{what} has {bad} non-finite (NaN or Inf) values")


def check_payload(payload: Payload, *, num_params: int, what: str = "delta") -> None:
    """Refuse an encoded delta of another length than the model's (its bytes were checked)."""
    if payload.length != num_params:
        raise AggregationError(
            f"{what} has {payload.length} values, expected {num_params} for this model"
        )


def check_weight(weight: float) -> None:
    """Refuse a weight that is not finite and strictly positive."""
    if not (math.isfinite(weight) and weight > 0):
        raise AggregationError(f"weight must be finite and > 0, got {weight}")


def check_num_examples(num_examples: int) -> None:
    """Refuse an example count that is not a positive integer (it weighs the update)."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise AggregationError(f"num_examples must be an integer, got {num_examples!r}")
    if num_examples < 1:
        raise AggregationError(f"num_examples must be >= 1, got {num_examples}")


def example_weight(num_examples: int, weighting: Weighting) -> float:
    """The weight of an update of ``num_examples`` examples under ``weighting``."""
    check_num_examples(num_examples)
    return float(num_examples) if weighting == "examples" else 1.0


def read_only(array: ArrayT) -> ArrayT:
    """The array, made read-only: arrays inside a frozen state must not be edited in place."""
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class AccumulatorState:
    """Σ wᵢΔᵢ (``total``, float64), Σ wᵢ (``weight``) and the number of updates folded in.

    Plain arrays and scalars, so the service can persist it between requests or restarts.
    """

    total: SumArray
    weight: float
    count: int

    @property
    def num_params(self) -> int:
        """Length of the model's weight vector."""
        return int(self.total.shape[0])


@dataclass(frozen=True, kw_only=True)
class WeightedSum:
    """Weighted mean of deltas, computed streaming: ``start``, then ``add`` each, then ``mean``.

    Each ``add`` returns a new state and leaves the old one untouched (TFF's measured process:
    state in, state out), so a failed write can retry from the state it had.
    """

    def start(self, num_params: int) -> AccumulatorState:
        """An empty sum for a model of ``num_params`` weights."""
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {num_params}")
        total = read_only(np.zeros(num_params, dtype=np.float64))
        return AccumulatorState(total=total, weight=0.0, count=0)

    def add(self, state: AccumulatorState, delta: Delta, *, weight: float) -> AccumulatorState:
        """Fold in ``weight × delta``: finite float32 of the model's length, or a payload.

        A payload is decoded into a fresh copy of the total, block by block (its pieces), so
        memory stays O(model) and no float copy of the update is made. A sum that would
        overflow raises :class:`NonFiniteError` and the state is unchanged.
        """
        if isinstance(delta, Payload):
            check_payload(delta, num_params=state.num_params)
        else:
            check_vector(delta, num_params=state.num_params)
        check_weight(weight)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            if isinstance(delta, Payload):
                total = state.total.copy()
                try:
                    delta.add_to(total, weight=weight)
                except CodecError as exc:  # pragma: no cover - lengths were checked above
                    raise AggregationError(str(exc)) from exc
            else:
                total = state.total + np.multiply(delta, weight, dtype=np.float64)
        if not np.isfinite(total).all():
            raise NonFiniteError("the weighted sum overflowed; the update is not added")
        total = read_only(total)
        return AccumulatorState(
            total=total, weight=state.weight + float(weight), count=state.count + 1
        )

    def mean(self, state: AccumulatorState) -> FloatArray:
        """Σ wᵢΔᵢ / Σ wᵢ as float32; an empty sum has no mean and raises."""
        if state.count == 0:
            raise AggregationError("no updates were added, so there is no mean to take")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            mean = (state.total / state.weight).astype(np.float32)
        if not np.isfinite(mean).all():
            raise NonFiniteError("the weighted mean overflows float32")
        return mean
