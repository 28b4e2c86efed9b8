"""A job's configuration as an admin writes it: validated at creation, stored with the job.

The routes accept it and the services act on it, so it sits below both: pydantic only, no
FastAPI and nothing of ``coordinator.api``. The aggregation package takes what it needs from it
through a protocol (``coordinator.aggregation.configured``), without importing it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from coordinator.fields import Amount, Count, PositiveAmount, Strict
from coordinator.privacy import CappedParticipation, PrivacyConfig, check_satisfiable


class ContributionCap(Strict):
    """At most ``max_contributions`` updates of one device in any ``window_versions`` versions.

    Enforced by :func:`coordinator.services.admission.refuse_if_capped` (see its guarantee).
    """

    window_versions: Count = Field(ge=1, description="consecutive versions of the window (W)")
    max_contributions: Count = Field(1, ge=1, description="updates of one device per window")


class PopulationConfig(Strict):
    """Who may train: eligibility requirements and population policies."""

    min_examples: Count = Field(1, ge=1)
    min_separation_seconds: Amount = Field(
        0.0, ge=0, description="least time between two contributions of one device"
    )
    admission_window_seconds: PositiveAmount | None = Field(
        None,
        description="uniform admission (coordinator.services.admission): a device whose task "
        "ended less than this ago waits out a retry window like any other, and within each "
        "window of this length devices are admitted in a random order, not in order of "
        "arrival. None: first come, first served",
    )
    contribution_cap: ContributionCap | None = Field(
        None, description="at most so many updates of one device in any W consecutive versions"
    )
    require_charging: bool = True
    require_idle: bool = True
    require_unmetered: bool = True
    min_free_memory_mb: Amount = Field(0.0, ge=0)


class AggregationConfig(Strict):
    """How updates become versions."""

    mode: Literal["async", "sync"] = "async"
    # Asynchronous (FedBuff, Nguyen et al., AISTATS 2022)
    concurrency: Count = Field(100, ge=1, description="most leases out at once (C)")
    buffer_size: Count = Field(10, ge=1, description="accepted updates per new version (K)")
    max_staleness: Count = Field(20, ge=0)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    staleness_exponent: Amount = Field(0.5, ge=0)
    hinge_a: Amount = Field(10.0, gt=0)
    hinge_b: Count = Field(4, ge=0)
    # Synchronous (FedAvg rounds, Bonawitz et al., SysML 2019)
    target: Count = Field(10, ge=1, description="reports that close a round")
    minimum: int | None = Field(None, ge=1, description="fewest reports for a round to count")
    over_selection: Amount = Field(1.3, ge=1.0)
    round_seconds: Amount = Field(600.0, gt=0, description="reporting deadline of a round")
    carry_rounds: Count = Field(
        3,
        ge=0,
        description="a round that fails short of its minimum hands its accepted reports to the "
        "next round, which may hand them on, until they are this many rounds old; the model "
        "is unchanged by a failed round, so they are still trained from the version the next "
        "round starts from (coordinator.services.rounds). 0: a failed round's reports are lost",
    )
    adaptive_over_selection: bool = Field(
        False,
        description="learn the cohort size and deadline from past rounds "
        "(coordinator.aggregation.cohort)",
    )
    completion_goal: Amount = Field(
        0.95, gt=0, lt=1, description="wanted share of rounds reaching the target (adaptive)"
    )
    max_surplus: Amount = Field(
        0.05,
        gt=0,
        lt=1,
        description="with heartbeats, the share of surplus devices in a cohort above which a "
        "round waits for one refill instead of selecting them (adaptive)",
    )
    over_commit: bool = Field(
        False,
        description="asynchronous: keep C useful devices working by leasing more than C, by the "
        "dropout rate and the slot time of dropouts learned from the job's recent leases "
        "(coordinator.aggregation.cohort.plan_concurrency); concurrency is then C useful slots",
    )
    max_over_commit: Amount = Field(
        4.0, ge=1, description="with over_commit, most leases out as a multiple of concurrency"
    )
    # Server optimizer (Reddi et al., ICLR 2021)
    server_optimizer: Literal["sgd", "fedavgm", "fedadam", "fedyogi"] = "sgd"
    server_learning_rate: Amount = Field(1.0, gt=0)
    server_momentum: Amount = Field(0.9, ge=0, lt=1)
    beta1: Amount = Field(0.9, ge=0, lt=1)
    beta2: Amount = Field(0.99, ge=0, lt=1)
    tau: Amount = Field(1e-3, gt=0)
    weighting: Literal["examples", "uniform"] = Field(
        "examples",
        description="an update's weight in the mean: its example count (FedAvg's), or 1 each; "
        "a DP job needs uniform, as example counts make one device's influence unbounded",
    )
    normalization: Literal["none", "fednova"] = Field(
        "none",
        description="synchronous: how a round averages updates that did different amounts of "
        "local work (task.time_budget_seconds). 'none': FedAvg's weighted mean, partial updates "
        "included as FedProx does; 'fednova': each delta divided by its local step norm and "
        "the mean rescaled by the effective step count (Wang et al., NeurIPS 2020)",
    )
    # Update checks
    max_update_norm: float | None = Field(None, gt=0)
    norm_policy: Literal["clip", "reject"] = "reject"

    @model_validator(mode="after")
    def _minimum_within_target(self) -> AggregationConfig:
        if self.minimum is not None and self.minimum > self.target:
            raise ValueError(f"minimum ({self.minimum}) exceeds target ({self.target})")
        return self

    @model_validator(mode="after")
    def _normalization_in_rounds(self) -> AggregationConfig:
        if self.normalization == "fednova" and self.mode != "sync":
            raise ValueError(
                "normalization 'fednova' normalises a synchronous round's reports; an "
                "asynchronous job averages its buffer with 'none'"
            )
        return self


# A lease survives this many missed heartbeats: one lost request or a slow step is not death.
HEARTBEAT_GRACE = 3


class TaskConfig(Strict):
    """Local training settings; unset fields take the plan's defaults."""

    local_epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    mu: float | None = Field(None, ge=0)
    lease_seconds: Amount = Field(600.0, gt=0, description="time a device has to upload")
    heartbeat_seconds: float | None = Field(
        None,
        gt=0,
        description="how often a device confirms it is still working on its task; a lease "
        f"unconfirmed for {HEARTBEAT_GRACE} intervals expires and frees its slot. None: no "
        "heartbeats, a vanished device holds its slot until lease_seconds run out",
    )
    time_budget_seconds: float | None = Field(
        None,
        gt=0,
        description="partial work: a device trains until its epochs are done or this many "
        "seconds have passed, then uploads what it has with its step count (FedProx's "
        "stragglers; aggregation.normalization 'fednova' weighs them by it). None: every epoch",
    )


class JobCreate(Strict):
    """An admin's request for a new training job."""

    name: str = Field(..., min_length=1, max_length=128)
    plan_id: Count
    aggregation: AggregationConfig = AggregationConfig()
    population: PopulationConfig = PopulationConfig()
    task: TaskConfig = TaskConfig()
    max_versions: int | None = Field(None, ge=1, description="stop after this many versions")
    keep_updates: bool = Field(
        False,
        description="keep each update's bytes after it is folded into a version (audit, "
        "replay); otherwise they are released, and the database grows by one model per "
        "version instead of one per update",
    )
    privacy: PrivacyConfig = Field(
        PrivacyConfig(),
        description="differential privacy of the published versions (off by default); see "
        "docs/privacy.md",
    )

    @model_validator(mode="after")
    def _private_aggregation(self) -> JobCreate:
        """A DP job's aggregation must keep the sensitivity bound the accounting assumes."""
        privacy = self.privacy
        if privacy.mechanism == "off":
            return self
        aggregation = self.aggregation
        if aggregation.weighting != "uniform":
            raise ValueError(
                "aggregation.weighting: a DP job needs 'uniform' (got "
                f"'{aggregation.weighting}'): example-count weights let one device's update "
                "outweigh the clip norm C the noise is sized for"
            )
        if aggregation.normalization != "none":
            raise ValueError(
                "aggregation.normalization: a DP job needs 'none': FedNova's rescaling by "
                "local steps would scale an update beyond the clip norm C the noise is sized for"
            )
        if aggregation.max_update_norm is not None:
            raise ValueError(
                "aggregation.max_update_norm: leave it unset in a DP job; its bound is "
                "privacy.clipping's C, and an update above it is rejected, never clipped"
            )
        if aggregation.norm_policy == "clip":
            raise ValueError(
                "aggregation.norm_policy: a DP job rejects an update above C (the device clips "
                "it); 'clip' would hide a device that does not"
            )
        if not isinstance(privacy.participation, CappedParticipation):
            raise ValueError(
                "privacy.participation.model: 'sampled' is not enforced by this coordinator yet "
                "(it would have to choose each version's devices itself), so its amplified ε "
                "would not be true; use 'capped'"
            )
        per_version = aggregation.buffer_size if aggregation.mode == "async" else aggregation.target
        try:
            check_satisfiable(privacy, updates_per_version=per_version)
        except ValueError as exc:
            raise ValueError(f"privacy.{exc}") from exc
        return self
