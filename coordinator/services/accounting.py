"""A DP job's accounting: calibration and budget at creation; noise, ledger and ε per version.

At creation (:func:`prepare`): z is calibrated when the job gives ``target_epsilon``, and the
budget gate's count is computed once, ``versions_within_budget`` (docs/privacy.md, "What ε is
reported": a bisection of ⌈log₂ limit⌉ compositions, after which the gate compares integers).
Per version (:func:`begin_version`, then :func:`finish_version` in the transaction that writes
the ``Version`` row): Gaussian noise N(0, (z_Δ·C)²) on the sum of the n_actual updates actually
aggregated, then / n_actual (``coordinator.privacy.private_average``); the ledger gains the
version's event; the version's metadata holds ε (PLD and RDP) at δ with its assumptions; the
adaptive clip norm moves (Andrew et al., NeurIPS 2021). The ledger lives on the job row, the
metadata on the version row, both written in one transaction: a crash keeps both or neither.

The accountant and the ledger are imported where they are used, not at the top: dp-accounting
(with scipy) costs seconds of import, which only a DP job should pay, when it is created or
makes a version, never a coordinator start (see ``coordinator.privacy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from coordinator.aggregation import FloatArray, SumArray
from coordinator.config import JobCreate
from coordinator.db.models import Job, Update
from coordinator.errors import Conflict, InvalidConfig
from coordinator.privacy import (
    AdaptiveClipper,
    AdaptiveClipping,
    ClipState,
    FixedClipping,
    NoiseRecord,
    NoiseSource,
    PrivacyConfig,
    private_average,
)
from fedge.protocol import METRIC_WITHIN_CLIP

if TYPE_CHECKING:
    from coordinator.privacy.ledger import PrivacyLedger

# Without max_versions, the budget is searched by doubling from planned_versions up to this.
MAX_BUDGET_VERSIONS = 1 << 20


@dataclass(frozen=True)
class PrivacyState:
    """What a DP job carries from version to version (``jobs.privacy_state``)."""

    ledger: PrivacyLedger
    versions_within_budget: int
    clip_norm: float  # C of the next version's tasks and noise
    clip_steps: int = 0
    calibrated_from: float | None = None  # the target_epsilon z was calibrated for
    epsilon: dict[str, Any] = field(default_factory=dict)  # the latest version's ε, δ, method

    def to_json(self) -> dict[str, Any]:
        """The JSON stored on the job row."""
        return {
            "ledger": self.ledger.to_json(),
            "versions_within_budget": self.versions_within_budget,
            "clip_norm": self.clip_norm,
            "clip_steps": self.clip_steps,
            "calibrated_from": self.calibrated_from,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrivacyState:
        """The state :meth:`to_json` wrote."""
        from coordinator.privacy.ledger import PrivacyLedger

        return cls(
            ledger=PrivacyLedger.from_json(data["ledger"]),
            versions_within_budget=int(data["versions_within_budget"]),
            clip_norm=float(data["clip_norm"]),
            clip_steps=int(data["clip_steps"]),
            calibrated_from=data["calibrated_from"],
            epsilon=dict(data["epsilon"]),
        )

    @property
    def exhausted(self) -> bool:
        """Whether one more version would exceed the job's ε_max."""
        return self.ledger.versions >= self.versions_within_budget


def prepare(request: JobCreate, *, allow_seeded_noise: bool) -> tuple[JobCreate, PrivacyState]:
    """A DP job's config as stored (z calibrated) and its state before version 1.

    Raises :class:`InvalidConfig` (422) naming the field: a seed the coordinator does not
    allow, a target ε that cannot be calibrated, or a budget too small for one version.
    """
    from coordinator.privacy.accountant import PrivacyAccountant, calibrate
    from coordinator.privacy.ledger import PrivacyLedger

    privacy = request.privacy
    if privacy.noise_seed is not None and not allow_seeded_noise:
        raise InvalidConfig(
            "privacy.noise_seed: this coordinator does not allow reproducible noise (anyone "
            "who knows the seed can remove it); it is for simulations only"
        )
    target = privacy.target_epsilon
    if target is not None:
        try:
            privacy = calibrate(privacy)
        except ValueError as exc:
            raise InvalidConfig(f"privacy.target_epsilon: cannot calibrate z ({exc})") from exc
        request = request.model_copy(update={"privacy": privacy})
    allowed = _versions_within_budget(privacy, request.max_versions)
    if allowed == 0:
        accountant = PrivacyAccountant(privacy)
        raise InvalidConfig(
            f"privacy.epsilon_max: one version already costs ε = "
            f"{accountant.epsilon_after(1):.4g} > {privacy.epsilon_max} at δ = {privacy.delta}; "
            "raise the noise multiplier or the budget"
        )
    return request, PrivacyState(
        ledger=PrivacyLedger(),
        versions_within_budget=allowed,
        clip_norm=_initial_clip_norm(privacy),
        calibrated_from=target,
    )


def state_of(job: Job) -> PrivacyState:
    """The DP state of ``job``; a job without one is a bug in the caller."""
    if job.privacy_state is None:  # pragma: no cover - every DP job is created with one
        raise RuntimeError(f"job {job.id} has no privacy state")
    return PrivacyState.from_json(job.privacy_state)


@dataclass
class PrivateStep:
    """One DP version in the making: its C, its noise source, and what the noise was."""

    config: PrivacyConfig
    clip_norm: float
    source: NoiseSource
    noise: NoiseRecord | None = None

    def average(self, total: SumArray, count: int) -> FloatArray:
        """(Σ Δᵢ + N(0, (z_Δ·C)²)) / n_actual: the aggregation's averaging callable."""
        mean, self.noise = private_average(
            total,
            n_actual=count,
            clip_norm=self.clip_norm,
            noise_multiplier=self.config.sum_noise_multiplier,
            source=self.source,
        )
        return mean


def begin_version(job: Job, config: JobCreate) -> PrivateStep | None:
    """The DP step of ``job``'s next version (None without privacy); refuses past the budget.

    The gate is also applied when a version is published (:func:`finish_version` ends the job
    at its last affordable version), so reaching this past the budget is a race lost.
    """
    if config.privacy.mechanism != "gaussian":
        return None
    state = state_of(job)
    if state.exhausted:
        raise Conflict(
            f"job {job.id} spent its privacy budget: version {job.current_version + 1} would "
            f"exceed ε_max = {config.privacy.epsilon_max}"
        )
    seed = config.privacy.noise_seed
    if seed is None:
        source = NoiseSource.from_entropy()
    else:  # one reproducible stream per (seed, job, version)
        words = np.random.SeedSequence([seed, job.id, job.current_version + 1]).generate_state(2)
        source = NoiseSource.reproducible(int(words[0]) << 32 | int(words[1]))
    return PrivateStep(config=config.privacy, clip_norm=state.clip_norm, source=source)


def finish_version(job: Job, step: PrivateStep, updates: Sequence[Update]) -> dict[str, Any]:
    """Record the version just aggregated: the ledger and C on the job, the metadata returned.

    Called in the transaction that adds the ``Version`` row, so the two commit together.
    """
    from coordinator.privacy.accountant import PrivacyAccountant

    if step.noise is None:  # pragma: no cover - the aggregator always averages once
        raise RuntimeError("the version was aggregated without its noise")
    config, state = step.config, state_of(job)
    accountant = PrivacyAccountant(config)
    ledger = accountant.record_version(state.ledger)
    report = accountant.report(ledger)
    clip_norm, clip_steps, clipped_fraction = state.clip_norm, state.clip_steps, None
    if isinstance(config.clipping, AdaptiveClipping):
        clipping = config.clipping
        clipper = AdaptiveClipper(
            target_quantile=clipping.target_quantile,
            learning_rate=clipping.learning_rate,
            clip_count_stddev=clipping.clip_count_stddev,
        )
        below = sum(int(update.metrics.get(METRIC_WITHIN_CLIP, 0.0) == 1.0) for update in updates)
        moved, measured = clipper.step(
            ClipState(clip_norm, clip_steps),
            below=below,
            n_actual=len(updates),
            source=step.source,
        )
        clip_norm, clip_steps = moved.clip_norm, moved.steps
        clipped_fraction = 1.0 - measured.noised_fraction  # released noised, so public
    summary = {
        "epsilon": report.epsilon,
        "epsilon_pld": report.epsilon_pld,
        "epsilon_rdp": report.epsilon_rdp,
        "method": report.method,
        "delta": report.delta,
        "versions": ledger.versions,
    }
    job.privacy_state = replace(
        state, ledger=ledger, clip_norm=clip_norm, clip_steps=clip_steps, epsilon=summary
    ).to_json()
    return {
        **report.as_dict(),
        "noise_multiplier": config.resolved_noise_multiplier,
        "sum_noise_multiplier": step.noise.noise_multiplier,
        "noise_stddev": step.noise.stddev,
        "clip_norm": step.clip_norm,
        "next_clip_norm": clip_norm,
        "n_actual": step.noise.n_actual,
        "clipped_fraction": clipped_fraction,
        "noise_seeded": step.noise.seeded,
        "calibrated_from": state.calibrated_from,
        "versions_within_budget": state.versions_within_budget,
    }


def _versions_within_budget(config: PrivacyConfig, max_versions: int | None) -> int:
    """The most versions within ε_max: up to max_versions, else searched by doubling."""
    from coordinator.privacy.accountant import PrivacyAccountant

    accountant = PrivacyAccountant(config)
    if max_versions is not None:
        return accountant.versions_within_budget(max_versions)
    limit = config.planned_versions or 64
    while True:
        allowed = accountant.versions_within_budget(limit)
        if allowed < limit or limit >= MAX_BUDGET_VERSIONS:
            return allowed
        limit = min(2 * limit, MAX_BUDGET_VERSIONS)


def _initial_clip_norm(config: PrivacyConfig) -> float:
    clipping = config.clipping
    if isinstance(clipping, FixedClipping):
        return clipping.clip_norm
    if isinstance(clipping, AdaptiveClipping):
        return clipping.initial_clip_norm
    raise RuntimeError("a DP config without clipping")  # pragma: no cover - validated
