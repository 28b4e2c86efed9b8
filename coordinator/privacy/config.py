"""A job's privacy section: mechanism, participation model, noise, clipping and budget.

Every refusal names its field and says why (issue 15, item 7), so a deployment mistake reads
as one: ``noise_multiplier: must be > 0 when mechanism is 'gaussian' ...``. A DP label without
noise cannot be built: ``mechanism="gaussian"`` requires a positive noise multiplier (given,
or calibrated from ``target_epsilon``), a clipping rule, δ below 1/population and a budget.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from coordinator.fields import (
    Amount,
    Count,
    Fraction,
    NonNegativeCount,
    PositiveCount,
    Strict,
)


class Frozen(Strict):
    """A privacy section is read, never changed: its models are frozen too."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SampledParticipation(Frozen):
    """Each version's contributors are a sample of the population the coordinator enforces.

    Give ``sampling_rate`` q (Poisson: each device joins a version independently with
    probability q; accounted under add-or-remove-one) or ``cohort_size`` m (exactly m of the
    ``population`` N drawn without replacement; accounted under replace-one, RDP only).
    """

    model: Literal["sampled"] = "sampled"
    population: Count = Field(ge=1, description="devices eligible to be sampled (N)")
    sampling_rate: Fraction | None = Field(None, description="Poisson rate q")
    cohort_size: PositiveCount | None = Field(None, description="fixed cohort m of N")

    @model_validator(mode="after")
    def _one_sampling_rule(self) -> SampledParticipation:
        if (self.sampling_rate is None) == (self.cohort_size is None):
            raise ValueError(
                "sampling_rate / cohort_size: give exactly one (Poisson rate q, or a fixed "
                "cohort of m devices)"
            )
        if self.cohort_size is not None and self.cohort_size > self.population:
            raise ValueError(
                f"cohort_size: {self.cohort_size} exceeds the population of {self.population}"
            )
        return self


class CappedParticipation(Frozen):
    """No sampling claimed: each device contributes at most once per ``window`` W versions.

    The mode for FedBuff, whose arrivals are not a sample. Without amplification, a device's
    worst case over T versions is ⌈T/W⌉ contributions, each to a Gaussian release.
    """

    model: Literal["capped"] = "capped"
    population: Count = Field(ge=1, description="devices that may contribute (N)")
    window: Count = Field(ge=1, description="versions between two contributions of a device (W)")


Participation = Annotated[SampledParticipation | CappedParticipation, Field(discriminator="model")]


class FixedClipping(Frozen):
    """Every update is clipped to the same L2 norm C."""

    kind: Literal["fixed"] = "fixed"
    clip_norm: Amount = Field(gt=0, allow_inf_nan=False, description="L2 bound C")


class AdaptiveClipping(Frozen):
    """C follows a quantile of update norms (Andrew et al., NeurIPS 2021), from noised counts.

    Defaults are the paper's: target quantile 0.5, learning rate 0.2. ``clip_count_stddev`` σ_b
    is the std of the noise on the count of updates with norm ≤ C (the paper suggests m/20 for
    an expected cohort of m). Its privacy cost is part of ``noise_multiplier``: see
    :attr:`PrivacyConfig.sum_noise_multiplier`.
    """

    kind: Literal["adaptive"] = "adaptive"
    initial_clip_norm: Amount = Field(0.1, gt=0, allow_inf_nan=False)
    target_quantile: Amount = Field(0.5, gt=0, lt=1)
    learning_rate: Amount = Field(0.2, gt=0, allow_inf_nan=False)
    clip_count_stddev: Amount = Field(gt=0, allow_inf_nan=False, description="σ_b")


Clipping = Annotated[FixedClipping | AdaptiveClipping, Field(discriminator="kind")]

_DP_FIELDS = (
    "participation",
    "noise_multiplier",
    "target_epsilon",
    "delta",
    "epsilon_max",
    "clipping",
    "planned_versions",
    "noise_seed",
)


class PrivacyConfig(Frozen):
    """A job's differential-privacy settings; ``mechanism="off"`` (the default) means none.

    With ``mechanism="gaussian"``: exactly one of ``noise_multiplier`` z and ``target_epsilon``
    (z is then calibrated for ``planned_versions``, see :func:`coordinator.privacy.calibrate`),
    a ``participation`` model, a ``clipping`` rule, ``delta`` δ < 1/population and a budget
    ``epsilon_max``. z is the noise multiplier the accountant charges per release: with adaptive
    clipping it covers the update sum and the clip count together.
    """

    mechanism: Literal["off", "gaussian"] = "off"
    participation: Participation | None = None
    noise_multiplier: Amount | None = Field(None, allow_inf_nan=False)
    target_epsilon: Amount | None = Field(None, allow_inf_nan=False)
    delta: Amount | None = Field(None, allow_inf_nan=False)
    epsilon_max: Amount | None = Field(None, allow_inf_nan=False)
    clipping: Clipping | None = None
    planned_versions: PositiveCount | None = None
    noise_seed: NonNegativeCount | None = Field(
        None,
        description="simulations only: a reproducible noise seed, refused by a coordinator "
        "that does not allow it and marked in every version's metadata",
    )

    @model_validator(mode="after")
    def _honest(self) -> PrivacyConfig:
        if self.mechanism == "off":
            for name in _DP_FIELDS:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: set only with mechanism 'gaussian' (it is 'off')")
            return self
        participation, clipping = self.participation, self.clipping
        delta, epsilon_max = self.delta, self.epsilon_max
        if participation is None:
            raise _missing("participation", "the accounting depends on who may contribute")
        if clipping is None:
            raise _missing("clipping", "without a clip norm nothing bounds one device's influence")
        if delta is None:
            raise _missing("delta", "ε is reported for a target δ")
        if epsilon_max is None:
            raise _missing("epsilon_max", "the budget gate needs it")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "noise_multiplier / target_epsilon: give exactly one (z, or an ε to calibrate"
                " z for)"
            )
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            raise ValueError(
                f"noise_multiplier: must be > 0 when mechanism is 'gaussian', got "
                f"{self.noise_multiplier} (no noise is no privacy)"
            )
        if self.target_epsilon is not None:
            if self.target_epsilon <= 0:
                raise ValueError(f"target_epsilon: must be > 0, got {self.target_epsilon}")
            if self.planned_versions is None:
                raise ValueError("planned_versions: needed to calibrate z for target_epsilon")
            if self.target_epsilon > epsilon_max:
                raise ValueError(
                    f"target_epsilon: {self.target_epsilon} exceeds epsilon_max {epsilon_max}, "
                    "so the job would stop before its planned versions"
                )
        if not 0 < delta < 1 / participation.population:
            raise ValueError(
                f"delta: must lie in (0, 1/population) = (0, {1 / participation.population:.3g}),"
                f" got {delta}; at δ ≥ 1/N releasing one device's data outright is 'private'"
            )
        if epsilon_max <= 0:
            raise ValueError(f"epsilon_max: must be > 0, got {epsilon_max}")
        if isinstance(clipping, AdaptiveClipping) and self.noise_multiplier is not None:
            _check_count_noise(self.noise_multiplier, clipping.clip_count_stddev)
        return self

    @property
    def sum_noise_multiplier(self) -> float:
        """z_Δ, the multiplier of the noise on the update sum: std z_Δ·C.

        Fixed clipping: z itself. Adaptive clipping spends part of z on the clip count:
        z_Δ = (z⁻² − (2σ_b)⁻²)^(-1/2) (Andrew et al., NeurIPS 2021, §3.1), so that the sum and
        the count released together cost exactly one Gaussian of multiplier z.
        """
        z = self.resolved_noise_multiplier
        if isinstance(self.clipping, AdaptiveClipping):
            return _sum_multiplier(z, self.clipping.clip_count_stddev)
        return z

    @property
    def resolved_noise_multiplier(self) -> float:
        """z, once given or calibrated; a config still waiting for calibration raises."""
        if self.mechanism != "gaussian":
            raise ValueError("mechanism: 'off' has no noise multiplier")
        if self.noise_multiplier is None:
            raise ValueError(
                "noise_multiplier: not calibrated yet; use coordinator.privacy.calibrate"
            )
        return self.noise_multiplier


def _missing(name: str, why: str) -> ValueError:
    return ValueError(f"{name}: required when mechanism is 'gaussian' ({why})")


def _sum_multiplier(z: float, clip_count_stddev: float) -> float:
    return 1.0 / math.sqrt(z**-2 - (2.0 * clip_count_stddev) ** -2)


def _check_count_noise(z: float, clip_count_stddev: float) -> None:
    if 2.0 * clip_count_stddev <= z:
        raise ValueError(
            f"clipping.clip_count_stddev: must exceed noise_multiplier / 2 = {z / 2:.4g} "
            f"(got {clip_count_stddev}): the clip count's noise alone would spend the whole "
            "privacy budget z, leaving none for the update sum"
        )


def check_satisfiable(config: PrivacyConfig, *, updates_per_version: int) -> None:
    """Refuse a participation model the population cannot honour for this job's versions.

    Capped: in any W consecutive versions each device contributes at most once, so
    ``updates_per_version · W`` must not exceed the population. Sampled: the expected cohort
    (q·N, or m) must reach ``updates_per_version``. Raises ``ValueError`` naming the field.
    """
    participation = config.participation
    if participation is None:
        return
    if updates_per_version < 1:
        raise ValueError(f"updates_per_version must be >= 1, got {updates_per_version}")
    if isinstance(participation, CappedParticipation):
        needed = updates_per_version * participation.window
        if needed > participation.population:
            raise ValueError(
                f"participation.window: {participation.window} versions of "
                f"{updates_per_version} updates need {needed} distinct devices, more than the "
                f"population of {participation.population}"
            )
        return
    expected = (
        participation.cohort_size
        if participation.cohort_size is not None
        else (participation.sampling_rate or 0.0) * participation.population
    )
    if expected < updates_per_version:
        field = "cohort_size" if participation.cohort_size is not None else "sampling_rate"
        raise ValueError(
            f"participation.{field}: the expected cohort of {expected:g} devices is below the "
            f"{updates_per_version} updates a version needs"
        )
