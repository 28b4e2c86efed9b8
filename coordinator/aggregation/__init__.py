"""Aggregation of device updates: weighted sums, staleness, server optimizers, rounds, cohorts.

Pure numpy and the standard library, no I/O: the service streams stored updates through these
objects and persists the states they return (plain arrays and scalars).

- ``accumulator``: the streaming weighted sum; ``norms``: update norms and their moments;
- ``staleness``, ``server_optimizers``: the pieces FedBuff and FedAvg compose;
- ``fedavg``: a synchronous round's step; ``fedbuff``: the asynchronous buffer; ``fednova``:
  a round's step normalised by each update's local steps (partial work);
- ``clipping``: per-update norm bounds; ``cohort``: a round's cohort size and deadline;
- ``configured``: a job's aggregation config (read through a protocol) → these objects;
- ``zeroing``: adaptive zeroing of outlying updates; ``robust``: coordinate-wise trimmed mean
  and median (the defences against poisoning).
"""

from coordinator.aggregation.accumulator import (
    AccumulatorState,
    Averaging,
    Delta,
    FloatArray,
    SumArray,
    WeightedSum,
    Weighting,
)
from coordinator.aggregation.clipping import NormBound, NormPolicy, clip_by_norm
from coordinator.aggregation.cohort import (
    CohortPlan,
    ConcurrencyPlan,
    LeaseHistory,
    ReportTimeModel,
    RoundHistory,
    fit_report_times,
    over_commit,
    plan_cohort,
    plan_concurrency,
)
from coordinator.aggregation.configured import (
    Aggregation,
    AggregationSettings,
    ZeroingSettings,
    configured,
)
from coordinator.aggregation.errors import (
    AggregationError,
    NonFiniteError,
    NormTooLargeError,
    StaleUpdateError,
)
from coordinator.aggregation.fedavg import FedAvgRound, RoundMeasurements
from coordinator.aggregation.fedbuff import BufferMeasurements, BufferState, FedBuffBuffer
from coordinator.aggregation.fednova import FedNovaRound, local_step_norm
from coordinator.aggregation.norms import Magnitudes, NormMoments, l2_norm, magnitudes, update_norm
from coordinator.aggregation.robust import CoordinateWise, RobustMeasurements, RobustRule
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
from coordinator.aggregation.zeroing import Zeroing, ZeroingStep

__all__ = [
    "AccumulatorState",
    "Aggregation",
    "AggregationError",
    "AggregationSettings",
    "Averaging",
    "BufferMeasurements",
    "BufferState",
    "CohortPlan",
    "ConcurrencyPlan",
    "Constant",
    "CoordinateWise",
    "Delta",
    "FedAdam",
    "FedAvgM",
    "FedAvgRound",
    "FedBuffBuffer",
    "FedNovaRound",
    "FedYogi",
    "FloatArray",
    "Hinge",
    "LeaseHistory",
    "Magnitudes",
    "NonFiniteError",
    "NormBound",
    "NormMoments",
    "NormPolicy",
    "NormTooLargeError",
    "OptimizerState",
    "Polynomial",
    "ReportTimeModel",
    "RobustMeasurements",
    "RobustRule",
    "RoundHistory",
    "RoundMeasurements",
    "ServerOptimizer",
    "ServerSGD",
    "StaleUpdateError",
    "StalenessFunction",
    "SumArray",
    "WeightedSum",
    "Weighting",
    "Zeroing",
    "ZeroingSettings",
    "ZeroingStep",
    "clip_by_norm",
    "configured",
    "fit_report_times",
    "l2_norm",
    "local_step_norm",
    "magnitudes",
    "over_commit",
    "plan_cohort",
    "plan_concurrency",
    "server_optimizer_from_config",
    "staleness_from_config",
    "update_norm",
]
