"""Staleness weights for asynchronous aggregation: how much an update on an old version counts.

FedBuff (Nguyen et al., AISTATS 2022) scales each update by s(τ) before buffering it, with the
polynomial s(τ) = 1/√(1+τ); the family of functions comes from FedAsync (Xie et al., 2019, §5.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from coordinator.aggregation.errors import AggregationError


@runtime_checkable
class StalenessFunction(Protocol):
    """Maps staleness τ (global versions since the update's base) to a weight in (0, 1]."""

    def __call__(self, staleness: int) -> float:
        """The weight of an update that is ``staleness`` versions old."""
        ...


def _check_staleness(staleness: int) -> None:
    """Refuse a negative staleness: an update cannot be based on a future version."""
    if staleness < 0:
        raise AggregationError(f"staleness must be >= 0, got {staleness}")


@dataclass(frozen=True, kw_only=True)
class Constant:
    """s(τ) = 1: every update counts fully, however old (FedAsync's constant function)."""

    def __call__(self, staleness: int) -> float:
        """The weight of an update ``staleness`` versions old; negative staleness raises."""
        _check_staleness(staleness)
        return 1.0


@dataclass(frozen=True, kw_only=True)
class Polynomial:
    """s(τ) = (1+τ)^-a — FedAsync; FedBuff uses a = 0.5."""

    exponent: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.exponent) and self.exponent >= 0):
            raise ValueError(f"exponent must be finite and >= 0, got {self.exponent}")

    def __call__(self, staleness: int) -> float:
        """The weight of an update ``staleness`` versions old; negative staleness raises."""
        _check_staleness(staleness)
        return float((1.0 + staleness) ** -self.exponent)


@dataclass(frozen=True, kw_only=True)
class Hinge:
    """s(τ) = 1 if τ <= b, else 1/(a(τ-b)+1) — FedAsync's hinge: full weight up to ``b``."""

    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and self.a > 0):
            raise ValueError(f"a must be finite and > 0, got {self.a}")
        if self.b < 0:
            raise ValueError(f"b must be >= 0, got {self.b}")

    def __call__(self, staleness: int) -> float:
        """The weight of an update ``staleness`` versions old; negative staleness raises."""
        _check_staleness(staleness)
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)


_FUNCTIONS: dict[str, type[Constant | Polynomial | Hinge]] = {
    "constant": Constant,
    "polynomial": Polynomial,
    "hinge": Hinge,
}


def staleness_from_config(name: str, **params: Any) -> StalenessFunction:
    """Build a staleness function from settings, e.g. ``staleness_from_config("hinge", a=5)``.

    Raises ``ValueError`` for an unknown name or a parameter the function does not take.
    """
    cls = _FUNCTIONS.get(name.lower())
    if cls is None:
        raise ValueError(
            f"unknown staleness function {name!r}; choose one of {', '.join(sorted(_FUNCTIONS))}"
        )
    accepted = set(cls.__dataclass_fields__)
    unknown = sorted(set(params) - accepted)
    if unknown:
        takes = ", ".join(sorted(accepted)) or "no parameters"
        raise ValueError(f"staleness function {name!r} takes {takes}; got unknown {unknown}")
    return cls(**params)
