"""Differential privacy for published versions: config, accountant, ledger, noise, clipping.

Pure: numpy, dp-accounting, pydantic and the standard library, no database and no HTTP (an
import-linter contract holds it to that). The service wires these in; docs/privacy.md has the
pipeline, the participation models and the plan.
"""

from coordinator.privacy.accountant import (
    Assumptions,
    EpsilonReport,
    PrivacyAccountant,
    calibrate,
    epsilons,
    neighboring_relation,
    planned_ledger,
    version_event,
)
from coordinator.privacy.adaptive import AdaptiveClipper, ClipMeasurements, ClipState, count_within
from coordinator.privacy.config import (
    AdaptiveClipping,
    CappedParticipation,
    FixedClipping,
    PrivacyConfig,
    SampledParticipation,
    check_satisfiable,
)
from coordinator.privacy.ledger import PrivacyLedger
from coordinator.privacy.noise import NoiseRecord, NoiseSource, add_gaussian_noise, private_average

__all__ = [
    "AdaptiveClipper",
    "AdaptiveClipping",
    "Assumptions",
    "CappedParticipation",
    "ClipMeasurements",
    "ClipState",
    "EpsilonReport",
    "FixedClipping",
    "NoiseRecord",
    "NoiseSource",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacyLedger",
    "SampledParticipation",
    "add_gaussian_noise",
    "calibrate",
    "check_satisfiable",
    "count_within",
    "epsilons",
    "neighboring_relation",
    "planned_ledger",
    "private_average",
    "version_event",
]
