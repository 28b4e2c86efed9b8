"""The typed ORM: every durable fact of the coordinator, with its invariants as constraints.

Times are float seconds from the injected :class:`fedge.clock.Clock`, never the database's
``now()``, so that a simulator can drive the coordinator in virtual time.

Invariants held by the database, not only by Python:
- one accepted update per lease (``updates.lease_id`` is unique);
- global versions are numbered 0, 1, 2… per job (primary key ``(job_id, number)``);
- blobs are content-addressed (primary key ``sha256``), so storing one twice is a no-op.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    and_,
    or_,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class JobMode(enum.StrEnum):
    """How a job aggregates."""

    ASYNC = "async"  # FedBuff: Nguyen et al., AISTATS 2022
    SYNC = "sync"  # FedAvg rounds: McMahan et al. 2017, Bonawitz et al. 2019


class JobStatus(enum.StrEnum):
    """Lifecycle of a job."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    BUDGET_EXHAUSTED = "budget_exhausted"  # a DP job whose next version would exceed ε_max

    @property
    def ended(self) -> bool:
        """Whether the job is over for good: its model never moves again."""
        return self in (JobStatus.STOPPED, JobStatus.BUDGET_EXHAUSTED)


class LeaseStatus(enum.StrEnum):
    """Lifecycle of a lease: one device's task on one job."""

    ACTIVE = "active"
    COMPLETED = "completed"  # its update was accepted
    REJECTED = "rejected"  # its update was refused (e.g. too stale, round closed)
    ABORTED = "aborted"  # the device reported it gave up
    EXPIRED = "expired"  # the device went silent past the deadline


class RoundStatus(enum.StrEnum):
    """Lifecycle of a synchronous round."""

    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"  # fewer than the minimum reported by the deadline: model unchanged


class Stage(enum.StrEnum):
    """Where a version stands in the model registry (coordinator.services.registry)."""

    CANDIDATE = "candidate"  # made, not deployed
    CANARY = "canary"  # deployed to a share of devices
    LIVE = "live"  # the job's deployed version: at most one per job
    RETIRED = "retired"  # was canary or live, replaced or rolled back


class Blob(Base):
    """Content-addressed bytes: plans, weight vectors, updates, optimizer state."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


class Device(Base):
    """A registered device; it authenticates with a bearer token whose sha256 is kept."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    registered_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    runtime: Mapped[str] = mapped_column(String(64), default="")
    sdk_version: Mapped[str] = mapped_column(String(32), default="")


class Plan(Base):
    """A training plan: its manifest and the blobs of the plan and its initial weights."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    plan_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), unique=True)
    initial_weights_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    manifest: Mapped[dict[str, Any]]
    num_params: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    """A training job: a plan, how to aggregate, whom to train with, and where it stands."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    mode: Mapped[JobMode] = mapped_column(Enum(JobMode, native_enum=False, length=16))
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=16))
    config: Mapped[dict[str, Any]]  # the validated JobConfig, as JSON
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    optimizer_state_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    created_at: Mapped[float] = mapped_column(Float)
    # A DP job's ledger, budget and adaptive clip norm (coordinator.services.accounting);
    # NULL without privacy. Written with each version, in its transaction.
    privacy_state: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Version(Base):
    """An immutable global model version and the measurements of the step that made it."""

    __tablename__ = "versions"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    weights_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    created_at: Mapped[float] = mapped_column(Float)
    num_updates: Mapped[int] = mapped_column(Integer, default=0)
    num_examples: Mapped[int] = mapped_column(BigInteger, default=0)
    mean_staleness: Mapped[float] = mapped_column(Float, default=0.0)
    update_norm_mean: Mapped[float] = mapped_column(Float, default=0.0)
    update_norm_var: Mapped[float] = mapped_column(Float, default=0.0)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    aggregation_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # A DP version's ε (PLD, RDP), δ, assumptions, z, C, n_actual, clipped fraction, seeded.
    privacy: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The registry's stage; one live version per job is a partial unique index (0007; the
    # column holds the enum's names, as every Enum column here does).
    stage: Mapped[Stage] = mapped_column(
        Enum(Stage, native_enum=False, length=16), default=Stage.CANDIDATE
    )

    __table_args__ = (
        Index(
            "uq_versions_one_live",
            "job_id",
            unique=True,
            sqlite_where=text("stage = 'LIVE'"),
            postgresql_where=text("stage = 'LIVE'"),
        ),
    )
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Zeroing (norm, zeroed, next estimate) and the robust rule of the step; NULL: neither.
    defences: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Round(Base):
    """A synchronous round: requirements (target, minimum, deadline) and counters."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    number: Mapped[int] = mapped_column(Integer)
    base_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[RoundStatus] = mapped_column(Enum(RoundStatus, native_enum=False, length=16))
    target: Mapped[int] = mapped_column(Integer)  # reports that close the round
    minimum: Mapped[int] = mapped_column(Integer)  # fewer at the deadline: round fails
    to_select: Mapped[int] = mapped_column(Integer)  # target x over-selection
    reported: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float)


class Lease(Base):
    """One device's task on one job, from check-in until it completes, aborts or expires."""

    __tablename__ = "leases"
    __table_args__ = (
        Index("ix_leases_job_status", "job_id", "status"),
        Index("ix_leases_job_closed", "job_id", "closed_at"),  # pace steering's recent tasks
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    base_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[LeaseStatus] = mapped_column(Enum(LeaseStatus, native_enum=False, length=16))
    issued_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    # With heartbeats on, the device must confirm it is working before this; NULL: no heartbeats.
    alive_until: Mapped[float | None] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float)
    close_reason: Mapped[str | None] = mapped_column(String(64))
    # What the device said when it gave up ("bad_plan: …"): shown to operators, and a
    # ``bad_plan`` abort keeps the job's plan away from a device that cannot run it.
    abort_detail: Mapped[str | None] = mapped_column(String(500))
    # The uplink codec and its task seed (63 bits: a signed BIGINT); NULL: float32, no seed.
    codec: Mapped[str | None] = mapped_column(String(64))
    codec_seed: Mapped[int | None] = mapped_column(BigInteger)

    # A lease is live while it is active and neither past its deadline nor silent too long.
    # Everything that counts or accepts leases asks this, so a lease is dead the moment it is
    # overdue; the periodic sweep only records it (status EXPIRED), it decides nothing.

    def overdue(self, now: float) -> str | None:
        """Why this lease is dead at ``now`` though not closed yet: "deadline", "silent" or None."""
        if now > self.deadline_at:
            return "deadline"
        if self.alive_until is not None and now > self.alive_until:
            return "silent"
        return None

    def close(self, status: LeaseStatus, reason: str, now: float) -> None:
        """End the lease: ``status``, why, and when."""
        self.status, self.close_reason, self.closed_at = status, reason, now

    @classmethod
    def live(cls, now: float) -> ColumnElement[bool]:
        """SQL for: active, and not :meth:`overdue` at ``now``."""
        return and_(
            cls.status == LeaseStatus.ACTIVE,
            cls.deadline_at >= now,
            or_(cls.alive_until.is_(None), cls.alive_until >= now),
        )


class Update(Base):
    """An accepted update; ``version`` stays NULL while it waits in the buffer (or round)."""

    __tablename__ = "updates"
    __table_args__ = (Index("ix_updates_job_pending", "job_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("leases.id"), unique=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    base_version: Mapped[int] = mapped_column(Integer)
    staleness: Mapped[int] = mapped_column(Integer)
    num_examples: Mapped[int] = mapped_column(Integer)
    delta_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    norm: Mapped[float] = mapped_column(Float)
    clipped: Mapped[bool] = mapped_column(default=False)
    metrics: Mapped[dict[str, Any]]
    received_at: Mapped[float] = mapped_column(Float)
    version: Mapped[int | None] = mapped_column(Integer)  # the version it went into
    codec: Mapped[str | None] = mapped_column(String(64))  # NULL: float32
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Evaluation(Base):
    """An evaluation task's lease and, once reported, its metrics (never data).

    One report per device per version: ``(job_id, version, device_id)`` is unique, so a
    device is never asked to evaluate the same version twice and a report counts once.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("job_id", "version", "device_id"),
        Index("ix_evaluations_job_version", "job_id", "version", "reported_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the task's lease id
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    version: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    issued_at: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[float] = mapped_column(Float)
    reported_at: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    num_examples: Mapped[int | None] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(64), default="")


class StageChange(Base):
    """One move of a version in the registry: from, to, when, by whom and why."""

    __tablename__ = "stage_changes"
    __table_args__ = (Index("ix_stage_changes_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    version: Mapped[int] = mapped_column(Integer)
    from_stage: Mapped[Stage] = mapped_column(Enum(Stage, native_enum=False, length=16))
    to_stage: Mapped[Stage] = mapped_column(Enum(Stage, native_enum=False, length=16))
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(16))  # "admin" or "gate"
    reason: Mapped[str] = mapped_column(String(500), default="")


class Rejection(Base):
    """An upload refused for a reason an operator should see counted (never its payload)."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    device_id: Mapped[str | None] = mapped_column(String(36))
    lease_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float)
