"""Differential privacy for published versions: config, accountant, ledger, noise, clipping.

Pure: numpy, dp-accounting, pydantic and the standard library, no database and no HTTP (an
import-linter contract holds it to that). The service wires these in; docs/privacy.md has the
pipeline, the participation models and the plan.

The accountant and the ledger are loaded on first use (PEP 562): dp-accounting pulls in scipy,
~2 s of import on a busy two-core host, which every coordinator start would otherwise pay
(``coordinator.config`` imports this package for the job's privacy section), DP or not.
"""

import importlib
from typing import TYPE_CHECKING, Any

from coordinator.privacy.adaptive import AdaptiveClipper, ClipMeasurements, ClipState, count_within
from coordinator.privacy.config import (
    AdaptiveClipping,
    CappedParticipation,
    FixedClipping,
    PrivacyConfig,
    SampledParticipation,
    check_satisfiable,
)
from coordinator.privacy.noise import NoiseRecord, NoiseSource, add_gaussian_noise, private_average

if TYPE_CHECKING:
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
    from coordinator.privacy.ledger import PrivacyLedger

_LAZY = {
    **dict.fromkeys(
        (
            "Assumptions",
            "EpsilonReport",
            "PrivacyAccountant",
            "calibrate",
            "epsilons",
            "neighboring_relation",
            "planned_ledger",
            "version_event",
        ),
        "coordinator.privacy.accountant",
    ),
    "PrivacyLedger": "coordinator.privacy.ledger",
}


def __getattr__(name: str) -> Any:
    """The accountant's and the ledger's names, imported with dp-accounting when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
