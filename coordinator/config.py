"""A job's configuration as an admin writes it: validated at creation, stored with the job.

The routes accept it and the services act on it, so it sits below both: pydantic only, no
FastAPI and nothing of ``coordinator.api``. The aggregation package takes what it needs from it
through a protocol (``coordinator.aggregation.configured``), without importing it.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from coordinator.fields import (
    Amount,
    Count,
    Fraction,
    NonNegativeCount,
    PositiveAmount,
    PositiveCount,
    Strict,
)
from coordinator.privacy import CappedParticipation, PrivacyConfig, check_satisfiable
from fedge.codecs import CodecError, parse_codec


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


class ZeroingConfig(Strict):
    """Adaptive zeroing (``coordinator.aggregation.zeroing``), with TFF's defaults.

    An update whose norm exceeds ``multiplier`` × q̂ + ``increment`` is replaced by zeros in its
    version, q̂ tracking the ``target_quantile`` of update norms from ``initial_estimate``.
    """

    initial_estimate: Amount = Field(10.0, gt=0, description="q̂ before the first version")
    target_quantile: Amount = Field(0.98, gt=0, lt=1, description="the quantile q̂ tracks")
    learning_rate: Amount = Field(
        math.log(10.0), ge=0, description="η of q̂'s geometric update; 0: a fixed zeroing norm"
    )
    multiplier: Amount = Field(2.0, gt=0, description="zeroing norm = multiplier × q̂ + increment")
    increment: Amount = Field(1.0, ge=0)


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
    # Defences against poisoning (docs/privacy.md, "Norm bounding and robust aggregation")
    zeroing: ZeroingConfig | None = Field(
        None,
        description="zero an update far longer than the others (before max_update_norm "
        "clips); None: off",
    )
    robust: Literal["trimmed_mean", "median"] | None = Field(
        None,
        description="coordinate-wise robust rule instead of the mean, per round or buffer "
        "(holds the version's k updates in memory at the close); needs uniform weighting; "
        "None: the streaming mean",
    )
    trim_fraction: Amount = Field(
        0.1, ge=0, lt=0.5, description="trimmed_mean: share of values cut at each end"
    )

    @model_validator(mode="after")
    def _minimum_within_target(self) -> AggregationConfig:
        if self.minimum is not None and self.minimum > self.target:
            raise ValueError(f"minimum ({self.minimum}) exceeds target ({self.target})")
        return self

    @model_validator(mode="after")
    def _robust_counts_each_update_once(self) -> AggregationConfig:
        if self.robust is not None and self.weighting != "uniform":
            raise ValueError(
                f"weighting: aggregation.robust = '{self.robust}' counts every update once "
                "(a coordinate's sorted values carry no weights), so it needs 'uniform'; "
                "example counts would let one device claim a larger say"
            )
        return self

    @model_validator(mode="after")
    def _normalization_in_rounds(self) -> AggregationConfig:
        if self.normalization == "fednova" and self.mode != "sync":
            raise ValueError(
                "normalization 'fednova' normalises a synchronous round's reports; an "
                "asynchronous job averages its buffer with 'none'"
            )
        return self


def individual_update_defences(aggregation: AggregationConfig) -> list[str]:
    """The configured defences that must see each update on its own (norm, coordinates)."""
    needs = []
    if aggregation.zeroing is not None:
        needs.append("aggregation.zeroing")
    if aggregation.robust is not None:
        needs.append("aggregation.robust")
    return needs


def refuse_hidden_updates(aggregation: AggregationConfig, *, hidden_by: str | None) -> None:
    """Refuse defences that need individual updates when ``hidden_by`` hides them from us.

    The hook for secure aggregation (issue 17): the coordinator then sees only the sum of a
    group's masked updates, so it can neither measure one update's norm nor sort a coordinate's
    values. Today nothing hides updates (``JobCreate`` passes None); the secure-aggregation
    switch passes its own name here and these defences are refused with it.
    """
    needs = individual_update_defences(aggregation)
    if hidden_by is not None and needs:
        raise ValueError(
            f"{needs[0]}: {hidden_by} hides each update from the coordinator, and this defence "
            f"needs to see them one by one ({', '.join(needs)}); turn one of them off"
        )


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


class EvaluationConfig(Strict):
    """Federated evaluation: devices evaluate versions and report metrics only.

    Read by :mod:`coordinator.services.evaluation`; the statistics are
    :func:`coordinator.aggregation.evaluation.summarize`'s.
    """

    fraction: Fraction = Field(
        0.1,
        description="share of eligible check-ins handed an evaluation task instead of "
        "training (chosen by a stable hash of job, version and device)",
    )
    min_reports: PositiveCount = Field(
        10, description="reports a version needs before its evaluation counts (gates)"
    )
    max_reports: PositiveCount = Field(
        100, description="no more evaluation tasks of a version once it has this many reports"
    )
    on: Literal["held_out_split", "non_trainers"] = Field(
        "held_out_split",
        description="held_out_split: every task holds out held_out_fraction of the device's "
        "examples from training and evaluation runs on them; non_trainers: only devices that "
        "did not train the version evaluate it, on all their examples",
    )
    held_out_fraction: Fraction = Field(0.2, description="the held-out share (held_out_split)")

    @model_validator(mode="after")
    def _min_within_max(self) -> EvaluationConfig:
        if self.min_reports > self.max_reports:
            raise ValueError(
                f"min_reports ({self.min_reports}) exceeds max_reports ({self.max_reports})"
            )
        return self


class PromotionConfig(Strict):
    """Promotion gates: when a version moves to live, and when a live one is rolled back.

    The decision is :func:`coordinator.services.promotion.decide`'s (pure); unset gates pass.
    """

    auto: bool = Field(
        False,
        description="apply the gates' decision as evaluation reports arrive: promote a "
        "candidate or canary that passes, roll back a canary or live version that fails",
    )
    worst10_margin: Annotated[float, Field(ge=0)] | None = Field(
        None,
        description="federated worst-10 % accuracy must not fall below the live version's "
        "minus this margin",
    )
    min_mean_accuracy: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="federated mean accuracy at least this"
    )
    max_epsilon: PositiveAmount | None = Field(None, description="a DP version's ε at most this")
    rollout_steps: list[Fraction] | None = Field(
        None,
        description="staged rollout of the inference model (coordinator.services.rollout): "
        "the shares of devices served a canary, strictly increasing, e.g. [0.01, 0.1, 1.0]. "
        "A candidate that passes the gates becomes a canary at the first step; each step's "
        "fresh evaluation reports (min_reports of them) passing widens it, the last one makes "
        "it live; a failing one rolls it back. None: a passing version goes live at once",
    )

    @model_validator(mode="after")
    def _steps_increase(self) -> PromotionConfig:
        steps = self.rollout_steps
        if steps is not None and (not steps or any(a >= b for a, b in itertools.pairwise(steps))):
            raise ValueError(
                f"rollout_steps must be shares in (0, 1], strictly increasing (got {steps})"
            )
        return self


class CompressionConfig(Strict):
    """The uplink codecs a job allows, and the per-task budget that picks one for each lease.

    Each lease gets the least lossy allowed codec whose upload fits the budget at the device's
    measured uplink rate (:func:`coordinator.compression.choose_codec`); without a budget, or
    for a device that measured nothing, the least lossy allowed codec. See docs/compression.md.
    """

    codecs: list[str] = Field(
        default_factory=lambda: ["float32"],
        min_length=1,
        max_length=16,
        description="allowed uplink codecs (fedge.codecs names: float32, fp16, rot1..rot8, "
        "eden1, randk10, randk10+rot4, fix8:range=0.05, ...), stored canonical",
    )
    task_bytes: PositiveCount | None = Field(
        None, description="largest upload a task may send, in bytes. None: no byte budget"
    )
    task_seconds: PositiveAmount | None = Field(
        None,
        description="longest upload a task may take at the device's measured uplink rate. "
        "None: no time budget",
    )

    seed: NonNegativeCount | None = Field(
        None,
        description="derive each lease's codec seed from this, the job, the time of issue and "
        "the device's registration time, so a simulated run repeats (the simulator's); None: "
        "fresh random seeds",
    )

    @field_validator("codecs")
    @classmethod
    def _canonical(cls, names: list[str]) -> list[str]:
        canonical: list[str] = []
        for name in names:
            try:
                codec = parse_codec(name).name
            except CodecError as exc:
                raise ValueError(f"codec {name!r}: {exc}") from exc
            if codec not in canonical:
                canonical.append(codec)
        return canonical


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
    evaluation: EvaluationConfig | None = Field(
        None, description="federated evaluation tasks beside training; None: none"
    )
    promotion: PromotionConfig = Field(
        PromotionConfig(), description="the model registry's promotion gates"
    )
    compression: CompressionConfig = Field(
        CompressionConfig(),
        description="uplink codecs and the per-task budget that picks one per lease; see "
        "docs/compression.md",
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
        if self.compression.codecs != ["float32"]:
            raise ValueError(
                "compression.codecs: a DP job takes float32 updates only for now: a lossy "
                "codec's error lengthens the decoded update past the clip norm C the noise is "
                f"sized for (got {self.compression.codecs})"
            )
        per_version = aggregation.buffer_size if aggregation.mode == "async" else aggregation.target
        try:
            check_satisfiable(privacy, updates_per_version=per_version)
        except ValueError as exc:
            raise ValueError(f"privacy.{exc}") from exc
        return self

    @model_validator(mode="after")
    def _defences_keep_their_guarantees(self) -> JobCreate:
        """Poisoning defences that would void DP's accounting, or that cannot see updates."""
        aggregation = self.aggregation
        refuse_hidden_updates(aggregation, hidden_by=None)  # issue 17: secure aggregation's name
        if self.privacy.mechanism == "off":
            return self
        if aggregation.robust is not None:
            raise ValueError(
                f"aggregation.robust: '{aggregation.robust}' with DP noise breaks the "
                "sensitivity bound the noise is sized for: the noise covers one device moving "
                "the sum by C in L2, but by shifting which values are cut one device moves "
                "each of the P coordinates of a trimmed mean or median by up to 2C/(k − 2t), "
                "so up to 2C·√P/(k − 2t) in L2; clipping to C is the DP job's norm bound"
            )
        if aggregation.zeroing is not None:
            raise ValueError(
                "aggregation.zeroing: a DP job's devices clip to C before uploading, so no "
                "stored norm exceeds C (an update above it is refused, norm_too_large) and "
                "zeroing has nothing to catch, while its quantile estimate, read from the "
                "norms in the clear, would be a release the accountant does not charge; use "
                "privacy.clipping (adaptive C is the accounted quantile)"
            )
        return self
