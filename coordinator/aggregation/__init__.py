"""Aggregation of device updates: weighted sums, staleness, server optimizers, rounds, cohorts.

Pure numpy, no I/O: the service streams stored updates through these objects and persists the
states they return (plain arrays and scalars).
"""

from coordinator.aggregation.accumulator import AccumulatorState, WeightedSum
from coordinator.aggregation.cohort import (
    CohortPlan,
    ReportTimeModel,
    RoundHistory,
    fit_report_times,
    plan_cohort,
)
from coordinator.aggregation.errors import AggregationError, NonFiniteError, StaleUpdateError
from coordinator.aggregation.rounds import (
    BufferMeasurements,
    BufferState,
    FedAvgRound,
    FedBuffBuffer,
    NormMoments,
    RoundMeasurements,
    clip_by_norm,
)
from coordinator.aggregation.server_optimizers import (
    FedAdam,
    FedAvgM,
    FedYogi,
    OptimizerState,
    ServerOptimizer,
    ServerSGD,
    server_optimizer_from_config,
)
from coordinator.aggregation.staleness import (
    Constant,
    Hinge,
    Polynomial,
    StalenessFunction,
    staleness_from_config,
)

__all__ = [
    "AccumulatorState",
    "AggregationError",
    "BufferMeasurements",
    "BufferState",
    "CohortPlan",
    "Constant",
    "FedAdam",
    "FedAvgM",
    "FedAvgRound",
    "FedBuffBuffer",
    "FedYogi",
    "Hinge",
    "NonFiniteError",
    "NormMoments",
    "OptimizerState",
    "Polynomial",
    "ReportTimeModel",
    "RoundHistory",
    "RoundMeasurements",
    "ServerOptimizer",
    "ServerSGD",
    "StaleUpdateError",
    "StalenessFunction",
    "WeightedSum",
    "clip_by_norm",
    "fit_report_times",
    "plan_cohort",
    "server_optimizer_from_config",
    "staleness_from_config",
]
