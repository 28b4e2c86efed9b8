"""The one mapping from a job's aggregation config to the objects that aggregate its updates.

The config is a pydantic model (``coordinator.config.AggregationConfig``), which this package
may not import: :func:`configured` reads the fields it needs through
:class:`AggregationSettings`, a protocol that model satisfies as it is. Every service that steps
a model, checks an update's norm or makes an optimizer state gets its pieces here, so one job's
config cannot mean two things in two places.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from coordinator.aggregation.accumulator import Weighting
from coordinator.aggregation.clipping import NormBound, NormPolicy
from coordinator.aggregation.fedavg import FedAvgRound
from coordinator.aggregation.fedbuff import FedBuffBuffer
from coordinator.aggregation.fednova import FedNovaRound
from coordinator.aggregation.robust import CoordinateWise, RobustRule
from coordinator.aggregation.server_optimizers import ServerOptimizer, server_optimizer_from_config
from coordinator.aggregation.staleness import StalenessFunction, staleness_from_config
from coordinator.aggregation.zeroing import Zeroing


class ZeroingSettings(Protocol):
    """The fields of a job's zeroing section (:class:`~coordinator.aggregation.zeroing.Zeroing`)."""

    @property
    def initial_estimate(self) -> float:
        """q̂ before the first version."""
        ...

    @property
    def target_quantile(self) -> float:
        """The quantile q̂ tracks."""
        ...

    @property
    def learning_rate(self) -> float:
        """η of q̂'s geometric update."""
        ...

    @property
    def multiplier(self) -> float:
        """Zeroing norm = multiplier · q̂ + increment."""
        ...

    @property
    def increment(self) -> float:
        """Zeroing norm = multiplier · q̂ + increment."""
        ...


class AggregationSettings(Protocol):
    """The fields of a job's aggregation config that choose and parameterise its aggregation."""

    @property
    def buffer_size(self) -> int:
        """Accepted updates per FedBuff version (K)."""
        ...

    @property
    def max_staleness(self) -> int:
        """Most versions an asynchronous update may lag behind."""
        ...

    @property
    def staleness(self) -> str:
        """The staleness function's name (``constant``, ``polynomial``, ``hinge``)."""
        ...

    @property
    def staleness_exponent(self) -> float:
        """The polynomial's exponent a."""
        ...

    @property
    def hinge_a(self) -> float:
        """The hinge's slope a."""
        ...

    @property
    def hinge_b(self) -> int:
        """The hinge's knee b."""
        ...

    @property
    def server_optimizer(self) -> str:
        """The server optimizer's name (``sgd``, ``fedavgm``, ``fedadam``, ``fedyogi``)."""
        ...

    @property
    def server_learning_rate(self) -> float:
        """The server step size η."""
        ...

    @property
    def server_momentum(self) -> float:
        """FedAvgM's momentum."""
        ...

    @property
    def beta1(self) -> float:
        """FedAdam / FedYogi first-moment decay."""
        ...

    @property
    def beta2(self) -> float:
        """FedAdam / FedYogi second-moment decay."""
        ...

    @property
    def tau(self) -> float:
        """FedAdam / FedYogi adaptivity τ."""
        ...

    @property
    def weighting(self) -> Weighting:
        """An update's weight in the mean: its example count, or 1 (``uniform``)."""
        ...

    @property
    def max_update_norm(self) -> float | None:
        """Bound on an update's L2 norm; None: unbounded."""
        ...

    @property
    def norm_policy(self) -> NormPolicy:
        """What happens to an update past the bound."""
        ...

    @property
    def zeroing(self) -> ZeroingSettings | None:
        """Adaptive zeroing of outlying updates; None: off."""
        ...

    @property
    def robust(self) -> RobustRule | None:
        """A coordinate-wise robust rule instead of the mean; None: the streaming mean."""
        ...

    @property
    def trim_fraction(self) -> float:
        """The trimmed mean's share of values cut at each end."""
        ...

    @property
    def normalization(self) -> str:
        """How a round's updates are averaged: ``none`` (FedAvg's mean) or ``fednova``."""
        ...


@dataclass(frozen=True)
class Aggregation:
    """A job's aggregation pieces, each built from its settings when first asked for.

    Built on demand, so a piece the job's mode never uses is never built: a synchronous job's
    staleness fields are not checked, as they never were.
    """

    settings: AggregationSettings

    @cached_property
    def server_optimizer(self) -> ServerOptimizer:
        """The server optimizer the settings name, with only the parameters it takes."""
        config = self.settings
        params: dict[str, Any] = {"learning_rate": config.server_learning_rate}
        if config.server_optimizer == "fedavgm":
            params["momentum"] = config.server_momentum
        elif config.server_optimizer in ("fedadam", "fedyogi"):
            params.update(beta1=config.beta1, beta2=config.beta2, tau=config.tau)
        return server_optimizer_from_config(config.server_optimizer, **params)

    @cached_property
    def staleness(self) -> StalenessFunction:
        """The staleness weight s(τ) of an asynchronous job's updates."""
        config = self.settings
        params: dict[str, float] = {}
        if config.staleness == "polynomial":
            params["exponent"] = config.staleness_exponent
        elif config.staleness == "hinge":
            params.update(a=config.hinge_a, b=config.hinge_b)
        return staleness_from_config(config.staleness, **params)

    @cached_property
    def fedbuff(self) -> FedBuffBuffer:
        """The asynchronous aggregator: K, the staleness bound and weight, the server step."""
        return FedBuffBuffer(
            buffer_size=self.settings.buffer_size,
            max_staleness=self.settings.max_staleness,
            staleness=self.staleness,
            server_optimizer=self.server_optimizer,
            weighting=self.settings.weighting,
        )

    @cached_property
    def fedavg(self) -> FedAvgRound:
        """The synchronous aggregator: a round's weighted mean, then the server step."""
        return FedAvgRound(
            server_optimizer=self.server_optimizer, weighting=self.settings.weighting
        )

    @cached_property
    def fednova(self) -> FedNovaRound:
        """The synchronous aggregator normalising by local steps (FedNova), then the server step."""
        return FedNovaRound(
            server_optimizer=self.server_optimizer, weighting=self.settings.weighting
        )

    @property
    def normalized(self) -> bool:
        """Whether a round's updates are normalised by their local steps (FedNova)."""
        return self.settings.normalization == "fednova"

    @cached_property
    def norm_bound(self) -> NormBound | None:
        """The update norm bound and its policy; None when updates are unbounded."""
        if self.settings.max_update_norm is None:
            return None
        return NormBound(max_norm=self.settings.max_update_norm, policy=self.settings.norm_policy)

    @cached_property
    def zeroing(self) -> Zeroing | None:
        """Adaptive zeroing of a version's outlying updates; None when off."""
        section = self.settings.zeroing
        if section is None:
            return None
        return Zeroing(
            initial_estimate=section.initial_estimate,
            target_quantile=section.target_quantile,
            learning_rate=section.learning_rate,
            multiplier=section.multiplier,
            increment=section.increment,
        )

    @cached_property
    def robust(self) -> CoordinateWise | None:
        """The coordinate-wise robust rule that replaces the mean; None: the streaming mean."""
        if self.settings.robust is None:
            return None
        return CoordinateWise(rule=self.settings.robust, trim_fraction=self.settings.trim_fraction)


def configured(settings: AggregationSettings) -> Aggregation:
    """The aggregation a job's config describes (``configured(config.aggregation).fedbuff``)."""
    return Aggregation(settings)
