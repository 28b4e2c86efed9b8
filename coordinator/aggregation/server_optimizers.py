"""Server optimizers: the aggregated delta is a pseudo-gradient that moves the global model.

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2. There Δ is the mean
client delta, *trained − base*, so it points downhill and is added, not subtracted:
x ← x + η·Δ for SGD, x ← x + η·m/(√v + τ) for the adaptive methods. Moments live in an
:class:`OptimizerState` of plain float32 arrays that the service stores between versions.
Arithmetic is done in float64 and rounded to float32 once, on the way out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.accumulator import FloatArray, check_vector, read_only
from coordinator.aggregation.errors import AggregationError, NonFiniteError

_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class OptimizerState:
    """Named float32 moment vectors (``slots``), the model length and the steps taken so far.

    Only arrays and scalars, so a caller can serialise each slot as a blob. ServerSGD has no
    slots; FedAvgM has ``momentum``; FedAdam and FedYogi have ``m`` and ``v``.
    """

    slots: Mapping[str, FloatArray]
    num_params: int
    step: int = 0


@runtime_checkable
class ServerOptimizer(Protocol):
    """Moves global weights by an aggregated delta: ``init`` once, then ``apply`` per version."""

    def init(self, num_params: int) -> OptimizerState:
        """The state before the first step, for a model of ``num_params`` weights."""
        ...

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[FloatArray, OptimizerState]:
        """New float32 weights and the state after one step with ``delta``."""
        ...


def _check_positive(name: str, value: float) -> None:
    """Refuse a rate or constant that is not finite and strictly positive."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def _check_decay(name: str, value: float) -> None:
    """Refuse a decay (β, momentum) outside [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _start(num_params: int, **slots: float) -> OptimizerState:
    """A state whose slots are constant vectors (zeros, or τ² for second moments)."""
    if num_params < 1:
        raise ValueError(f"num_params must be >= 1, got {num_params}")
    arrays = {
        name: read_only(np.full(num_params, value, dtype=np.float32))
        for name, value in slots.items()
    }
    return OptimizerState(slots=arrays, num_params=num_params)


def _inputs(
    weights: FloatArray, delta: FloatArray, state: OptimizerState, *slot_names: str
) -> tuple[_F64, _F64, list[_F64]]:
    """Check weights, delta and the state's slots; return them in float64 for the arithmetic."""
    check_vector(weights, num_params=state.num_params, what="weights")
    check_vector(delta, num_params=state.num_params, what="delta")
    if set(state.slots) != set(slot_names):
        raise AggregationError(
            f"optimizer state has slots {sorted(state.slots)}, expected {sorted(slot_names)}: "
            "was it made by another optimizer?"
        )
    slots = []
    for name in slot_names:
        check_vector(state.slots[name], num_params=state.num_params, what=f"slot {name!r}")
        slots.append(state.slots[name].astype(np.float64))
    return weights.astype(np.float64), delta.astype(np.float64), slots


def _result(
    new_weights: _F64, state: OptimizerState, **slots: _F64
) -> tuple[FloatArray, OptimizerState]:
    """Round to float32, refuse a non-finite result (weights or slots), and count the step.

    A slot that overflowed (Adam's Δ² for a huge Δ) would poison every later step, so it is
    refused as the weights are.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
        weights = new_weights.astype(np.float32)
        arrays = {name: read_only(value.astype(np.float32)) for name, value in slots.items()}
    if not np.isfinite(weights).all():
        raise NonFiniteError("the server step produced non-finite weights; the model is kept")
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise NonFiniteError(
                f"the server step overflowed its {name!r} slot; the model and state are kept"
            )
    return weights, OptimizerState(slots=arrays, num_params=state.num_params, step=state.step + 1)


@dataclass(frozen=True, kw_only=True)
class ServerSGD:
    """x ← x + η·Δ. With η = 1 this is FedAvg (McMahan et al., 2017): add the mean delta."""

    learning_rate: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("learning_rate", self.learning_rate)

    def init(self, num_params: int) -> OptimizerState:
        """No slots: plain SGD keeps nothing between steps."""
        return _start(num_params)

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[FloatArray, OptimizerState]:
        """One SGD step along ``delta``."""
        x, d, _ = _inputs(weights, delta, state)
        return _result(x + self.learning_rate * d, state)


@dataclass(frozen=True, kw_only=True)
class FedAvgM:
    """Server momentum (Hsu et al., 2019): m ← β·m + Δ; x ← x + η·m.

    Same recursion as Flower's FedAvg with ``server_momentum``, with Δ's sign convention.
    """

    learning_rate: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _check_positive("learning_rate", self.learning_rate)
        _check_decay("momentum", self.momentum)

    def init(self, num_params: int) -> OptimizerState:
        """A zero momentum vector."""
        return _start(num_params, momentum=0.0)

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[FloatArray, OptimizerState]:
        """One momentum step along ``delta``."""
        x, d, (m,) = _inputs(weights, delta, state, "momentum")
        m = self.momentum * m + d
        return _result(x + self.learning_rate * m, state, momentum=m)


@dataclass(frozen=True, kw_only=True)
class _Adaptive:
    """Shared part of Reddi et al.'s Algorithm 2; subclasses give the second-moment update.

    m₋₁ = 0 and v₋₁ = τ²: Algorithm 2 asks for v₋₁ ≥ τ² and we take its smallest value.
    (Flower starts v at zeros; v then differs by at most τ², 1e-6 at the defaults.)
    No bias correction, as in the paper; Flower's FedAdam adds Adam's, its FedYogi does not.
    """

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_positive("learning_rate", self.learning_rate)
        _check_decay("beta1", self.beta1)
        _check_decay("beta2", self.beta2)
        _check_positive("tau", self.tau)

    def init(self, num_params: int) -> OptimizerState:
        """Zero first moment and v = τ² (see the class docstring)."""
        return _start(num_params, m=0.0, v=self.tau**2)

    def apply(
        self, weights: FloatArray, delta: FloatArray, state: OptimizerState
    ) -> tuple[FloatArray, OptimizerState]:
        """One step: m ← β₁m + (1−β₁)Δ; v by the subclass's rule; x ← x + η·m/(√v + τ)."""
        x, d, (m, v) = _inputs(weights, delta, state, "m", "v")
        m = self.beta1 * m + (1.0 - self.beta1) * d
        v = self._second_moment(v, d * d)
        return _result(x + self.learning_rate * m / (np.sqrt(v) + self.tau), state, m=m, v=v)

    def _second_moment(self, v: _F64, delta_squared: _F64) -> _F64:
        """The second moment after one step; each method has its own rule."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class FedAdam(_Adaptive):
    """FedAdam (Reddi et al., 2021): v ← β₂·v + (1−β₂)·Δ². m₋₁ = 0, v₋₁ = τ²."""

    def _second_moment(self, v: _F64, delta_squared: _F64) -> _F64:
        return self.beta2 * v + (1.0 - self.beta2) * delta_squared


@dataclass(frozen=True, kw_only=True)
class FedYogi(_Adaptive):
    """FedYogi (Reddi et al., 2021): v ← v − (1−β₂)·Δ²·sign(v − Δ²). m₋₁ = 0, v₋₁ = τ².

    Yogi's additive rule (Zaheer et al., 2018) lets v grow or shrink by at most (1−β₂)·Δ² per
    step, so a single large delta cannot collapse the effective learning rate as in Adam.
    """

    def _second_moment(self, v: _F64, delta_squared: _F64) -> _F64:
        return v - (1.0 - self.beta2) * delta_squared * np.sign(v - delta_squared)


_OPTIMIZERS: dict[str, type[ServerSGD | FedAvgM | FedAdam | FedYogi]] = {
    "sgd": ServerSGD,
    "fedavg": ServerSGD,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


def server_optimizer_from_config(name: str, **params: Any) -> ServerOptimizer:
    """Build a server optimizer from settings, e.g. ``("fedadam", learning_rate=0.01)``.

    Names: ``sgd`` (alias ``fedavg``), ``fedavgm``, ``fedadam``, ``fedyogi``. Raises
    ``ValueError`` for an unknown name, an unknown parameter or a missing required one.
    """
    cls = _OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(
            f"unknown server optimizer {name!r}; choose one of {', '.join(sorted(_OPTIMIZERS))}"
        )
    accepted = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(
            f"server optimizer {name!r} takes {', '.join(sorted(accepted))}; got unknown {unknown}"
        )
    missing = sorted(
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in params
    )
    if missing:
        raise ValueError(f"server optimizer {name!r} needs {', '.join(missing)}")
    return cls(**params)
