"""ε for δ after every version, by dp-accounting, with the assumptions it rests on as data.

Which DP event one version is, per participation model (``version_event``):

- *sampled, Poisson rate q*: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` under
  add-or-remove-one; PLD (tight) is the headline, RDP beside it.
- *sampled, fixed cohort m of N*: ``SampledWithoutReplacementDpEvent(N, m,
  GaussianDpEvent(z/2))`` under replace-one; RDP only (dp-accounting's PLD does not support
  it). Replacing one device's update moves the sum by up to 2C, not C, so the noise std zC is
  z/2 sensitivities: the event carries z/2.
- *capped, once per W versions*: no amplification. Every version's sum gets fresh noise, so a
  device's worst case after T versions is ⌈T/W⌉ Gaussian releases of multiplier z: version v
  adds ``GaussianDpEvent(z)`` when it opens a window ((v − 1) mod W = 0) and nothing otherwise.
  This is exact for independent per-version noise, and never above the DP-FTRL
  tree-aggregation event of the same W (``SingleEpochTreeAggregationDpEvent``, Kairouz et al.,
  ICML 2021), which accounts a mechanism whose noise is tree-structured across versions, one
  this package does not run (see docs/privacy.md).

Cost: a PLD composition takes ~0.2–0.8 s on two cores whatever T (dp-accounting self-composes
a count by repeated squaring), RDP ~0.01–0.1 s. So ε is a function of the ledger's counts and
is cached by them (:func:`epsilons`, LRU): each version pays at most one composition per
method, the budget check and the report of the same version share it, a ledger rebuilt after a
restart recomputes only its current count, and nothing is computed per update. The budget gate
itself needs no composition per version: :meth:`PrivacyAccountant.versions_within_budget`
bisects the number of versions once (⌈log₂ limit⌉ compositions), and the gate compares counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Literal

import dp_accounting as dpa
from dp_accounting import NeighboringRelation, pld, rdp

from coordinator.privacy.config import (
    CappedParticipation,
    PrivacyConfig,
    SampledParticipation,
)
from coordinator.privacy.ledger import PrivacyLedger

Method = Literal["pld", "rdp"]
Sampling = Literal["poisson", "fixed_size", "capped"]


@dataclass(frozen=True)
class Assumptions:
    """What an ε is true under: print these beside the number, or it means nothing."""

    participation: Sampling
    population: int
    sampling_rate: float | None
    cohort_size: int | None
    window: int | None
    versions: int
    compositions: int  # releases a device can be in: T when sampled, ⌈T/W⌉ when capped
    noise_multiplier: float  # z charged per release (the update sum and the clip count)
    event_noise_multiplier: float  # z as the event carries it (z/2 under replace-one)
    neighboring_relation: str
    library: str


@dataclass(frozen=True)
class EpsilonReport:
    """ε at δ: the headline (PLD where supported, else RDP), both methods, the assumptions."""

    epsilon: float
    method: Method
    epsilon_pld: float | None
    epsilon_rdp: float
    delta: float
    assumptions: Assumptions

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields, for version metadata and the admin API."""
        return asdict(self)


def version_event(config: PrivacyConfig, version: int) -> dpa.DpEvent:
    """The DP event version number ``version`` (1-based) adds to the ledger."""
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    z = _charged_multiplier(config)
    participation = _participation(config)
    if isinstance(participation, CappedParticipation):
        opens_window = (version - 1) % participation.window == 0
        return dpa.GaussianDpEvent(z) if opens_window else dpa.NoOpDpEvent()
    if participation.sampling_rate is not None:
        return dpa.PoissonSampledDpEvent(participation.sampling_rate, dpa.GaussianDpEvent(z))
    cohort = _cohort(participation)
    return dpa.SampledWithoutReplacementDpEvent(
        participation.population, cohort, dpa.GaussianDpEvent(z / 2.0)
    )


def planned_ledger(config: PrivacyConfig, versions: int) -> PrivacyLedger:
    """The ledger after ``versions`` versions, built in closed form (equal to recording each)."""
    if versions < 0:
        raise ValueError(f"versions must be >= 0, got {versions}")
    participation = _participation(config)
    if versions == 0:
        return PrivacyLedger()
    if isinstance(participation, CappedParticipation):
        windows = math.ceil(versions / participation.window)
        return (
            PrivacyLedger()
            .record(version_event(config, 1), versions=windows)
            .record(dpa.NoOpDpEvent(), versions=versions - windows)
        )
    return PrivacyLedger().record(version_event(config, 1), versions=versions)


def neighboring_relation(config: PrivacyConfig) -> NeighboringRelation:
    """Replace-one for a fixed cohort (N is public there), add-or-remove-one otherwise."""
    participation = _participation(config)
    if isinstance(participation, SampledParticipation) and participation.cohort_size is not None:
        return NeighboringRelation.REPLACE_ONE
    return NeighboringRelation.ADD_OR_REMOVE_ONE


@functools.lru_cache(maxsize=256)
def epsilons(
    counts: tuple[tuple[dpa.DpEvent, int], ...], delta: float, relation: NeighboringRelation
) -> tuple[float | None, float]:
    """(ε by PLD or ``None`` where PLD does not support the events, ε by RDP) at ``delta``.

    Cached by the ledger's counts: the same ledger is never composed twice in a process.
    """
    event = PrivacyLedger(counts=counts).as_event()
    if isinstance(event, dpa.NoOpDpEvent):
        return 0.0, 0.0
    rdp_accountant = rdp.RdpAccountant(neighboring_relation=relation)
    epsilon_rdp = float(rdp_accountant.compose(event).get_epsilon(delta))
    pld_accountant = pld.PLDAccountant(neighboring_relation=relation)
    if not pld_accountant.supports(event):
        return None, epsilon_rdp
    return float(pld_accountant.compose(event).get_epsilon(delta)), epsilon_rdp


class PrivacyAccountant:
    """Accounts one job's versions under its (calibrated) privacy config.

    Usage per version, in the transaction that makes it: ``ledger =
    accountant.record_version(ledger)``, store ``ledger.to_json()`` with the version, put
    ``accountant.report(ledger).as_dict()`` in its metadata. Before making version T+1, the
    gate is ``ledger.versions < accountant.versions_within_budget(limit)``.
    """

    def __init__(self, config: PrivacyConfig) -> None:
        if config.mechanism != "gaussian":
            raise ValueError("mechanism: 'off' has nothing to account")
        self.config = config
        self._z = _charged_multiplier(config)
        self._relation = neighboring_relation(config)
        self._delta = _delta(config)

    def record_version(self, ledger: PrivacyLedger) -> PrivacyLedger:
        """``ledger`` with the next version's event composed in."""
        return ledger.record(version_event(self.config, ledger.versions + 1))

    def report(self, ledger: PrivacyLedger) -> EpsilonReport:
        """ε at the config's δ after the versions ``ledger`` holds."""
        epsilon_pld, epsilon_rdp = epsilons(ledger.counts, self._delta, self._relation)
        method: Method = "rdp" if epsilon_pld is None else "pld"
        return EpsilonReport(
            epsilon=epsilon_rdp if epsilon_pld is None else epsilon_pld,
            method=method,
            epsilon_pld=epsilon_pld,
            epsilon_rdp=epsilon_rdp,
            delta=self._delta,
            assumptions=self._assumptions(ledger),
        )

    def epsilon_after(self, versions: int) -> float:
        """The headline ε after ``versions`` versions (what the budget gate compares)."""
        return self.report(planned_ledger(self.config, versions)).epsilon

    def versions_within_budget(self, limit: int) -> int:
        """The most versions, up to ``limit``, whose ε stays within ``epsilon_max``.

        ε grows with the number of versions, so this bisects on it: ⌈log₂ limit⌉ compositions,
        once per job (cached with the rest).
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        budget = _epsilon_max(self.config)
        low, high = 0, limit  # invariant: ε(low) ≤ budget; answer in [low, high]
        if self.epsilon_after(high) <= budget:
            return high
        while high - low > 1:
            middle = (low + high) // 2
            if self.epsilon_after(middle) <= budget:
                low = middle
            else:
                high = middle
        return low

    def _assumptions(self, ledger: PrivacyLedger) -> Assumptions:
        participation = _participation(self.config)
        rate: float | None = None
        cohort: int | None = None
        window: int | None = None
        if isinstance(participation, CappedParticipation):
            sampling: Sampling = "capped"
            window = participation.window
        else:
            rate, cohort = participation.sampling_rate, participation.cohort_size
            sampling = "poisson" if rate is not None else "fixed_size"
        replace_one = self._relation is NeighboringRelation.REPLACE_ONE
        return Assumptions(
            participation=sampling,
            population=participation.population,
            sampling_rate=rate,
            cohort_size=cohort,
            window=window,
            versions=ledger.versions,
            compositions=ledger.compositions,
            noise_multiplier=self._z,
            event_noise_multiplier=self._z / 2.0 if replace_one else self._z,
            neighboring_relation=self._relation.name.lower(),
            library=f"dp-accounting {metadata.version('dp-accounting')}",
        )


def calibrate(config: PrivacyConfig, *, relative_tolerance: float = 1e-3) -> PrivacyConfig:
    """``config`` with z calibrated for ``target_epsilon`` after ``planned_versions``.

    dp-accounting's ``calibrate_dp_mechanism`` (which guarantees ε(z) ≤ target) runs twice:
    first with RDP, which is cheap at any z and gives a z_rdp that is enough; then, where PLD
    supports the event, with PLD between a z found below the target and z_rdp. The PLD search
    uses a coarser discretisation (1e-3: still a pessimistic upper bound, ~10× faster; a PLD
    composition at a large ε costs minutes at 1e-4), and the result is checked with the
    reporting accountant and raised until that one, too, reports ε ≤ target. z is within
    ``relative_tolerance`` of the smallest sufficient one.

    The result has ``noise_multiplier`` set and ``target_epsilon`` cleared, and is validated
    again (adaptive clipping's count noise must still leave room for the sum's).
    """
    target, versions = config.target_epsilon, config.planned_versions
    if config.mechanism != "gaussian" or target is None or versions is None:
        raise ValueError(
            "target_epsilon: calibration needs mechanism 'gaussian', target_epsilon and "
            "planned_versions"
        )
    delta = _delta(config)
    relation = neighboring_relation(config)

    def with_z(z: float) -> PrivacyConfig:
        return config.model_copy(update={"noise_multiplier": z, "target_epsilon": None})

    def ledger_event(z: float) -> dpa.DpEvent:
        return planned_ledger(with_z(z), versions).as_event()

    def search(make: Callable[[], dpa.PrivacyAccountant], bracket: object, tol: float) -> float:
        return float(
            dpa.calibrate_dp_mechanism(
                make, ledger_event, target, delta, bracket_interval=bracket, tol=tol
            )
        )

    z = search(
        functools.partial(rdp.RdpAccountant, neighboring_relation=relation),
        dpa.LowerEndpointAndGuess(1e-3, 1.0),
        1e-6,
    )
    coarse_pld = functools.partial(
        pld.PLDAccountant, neighboring_relation=relation, value_discretization_interval=1e-3
    )
    if coarse_pld().supports(ledger_event(z)):
        low = z * 0.8  # PLD is tighter than RDP: the PLD root lies at or below z_rdp
        while low > z / 4 and _epsilon(coarse_pld(), ledger_event(low), delta) <= target:
            low *= 0.8
        if _epsilon(coarse_pld(), ledger_event(low), delta) > target:
            z = search(coarse_pld, dpa.ExplicitBracketInterval(low, z), relative_tolerance * z)
    step = relative_tolerance * z
    while PrivacyAccountant(with_z(z)).epsilon_after(versions) > target:
        z += step
    return PrivacyConfig.model_validate(with_z(z).model_dump())


def _epsilon(accountant: dpa.PrivacyAccountant, event: dpa.DpEvent, delta: float) -> float:
    return float(accountant.compose(event).get_epsilon(delta))


def _participation(config: PrivacyConfig) -> SampledParticipation | CappedParticipation:
    if config.participation is None:
        raise ValueError("participation: required when mechanism is 'gaussian'")
    return config.participation


def _cohort(participation: SampledParticipation) -> int:
    if participation.cohort_size is None:  # pragma: no cover - the config validates this
        raise ValueError("participation.cohort_size: missing")
    return participation.cohort_size


def _charged_multiplier(config: PrivacyConfig) -> float:
    # With adaptive clipping z already covers the clip count too (config.sum_noise_multiplier
    # is the smaller multiplier put on the sum), so z is what every release is charged.
    return config.resolved_noise_multiplier


def _delta(config: PrivacyConfig) -> float:
    if config.delta is None:
        raise ValueError("delta: required when mechanism is 'gaussian'")
    return config.delta


def _epsilon_max(config: PrivacyConfig) -> float:
    if config.epsilon_max is None:
        raise ValueError("epsilon_max: required when mechanism is 'gaussian'")
    return config.epsilon_max
