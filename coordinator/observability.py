"""Prometheus metrics and structured logs.

What must agree across workers and survive restarts — updates accepted and rejected by reason,
leases by status, current versions, the staleness histogram, aggregation time — is read from
the database when ``/metrics`` is scraped. Only request latency and the check-in counter live
in this process's registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.aggregation.evaluation import EvaluationSample, summarize
from coordinator.db.models import (
    Blob,
    Device,
    Evaluation,
    Job,
    Lease,
    Rejection,
    Stage,
    Update,
    Version,
)
from coordinator.db.session import transaction
from fedge.logs import JsonFormatter as JsonFormatter  # serve's log config names it here

STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)


class Telemetry:
    """The metrics registry of one process: database-backed families plus local timings."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(sessions))
        self.check_ins = Counter(
            "fedge_check_ins", "Device check-ins served by this process", registry=self.registry
        )
        self.request_seconds = Histogram(
            "fedge_request_seconds",
            "Request latency in this process",
            ["route"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return bytes(generate_latest(self.registry))


class DatabaseCollector(Collector):
    """Metric families computed from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Any]:
        """Yield the families (one short read-only transaction)."""
        with transaction(self.sessions) as session:
            accepted = CounterMetricFamily(
                "fedge_updates_accepted", "Updates accepted", labels=["job"]
            )
            for job_id, count in session.execute(
                select(Update.job_id, func.count()).group_by(Update.job_id)
            ):
                accepted.add_metric([str(job_id)], count)
            yield accepted

            rejected = CounterMetricFamily(
                "fedge_updates_rejected", "Uploads refused, by reason", labels=["reason"]
            )
            for reason, count in session.execute(
                select(Rejection.reason, func.count()).group_by(Rejection.reason)
            ):
                rejected.add_metric([reason], count)
            yield rejected

            leases = GaugeMetricFamily("fedge_leases", "Leases by status", labels=["status"])
            for status, count in session.execute(
                select(Lease.status, func.count()).group_by(Lease.status)
            ):
                leases.add_metric([status.value], count)
            yield leases

            version = GaugeMetricFamily(
                "fedge_global_version", "Current global version", labels=["job", "status"]
            )
            for job_id, number, job_status in session.execute(
                select(Job.id, Job.current_version, Job.status)
            ):
                version.add_metric([str(job_id), job_status.value], number)
            yield version

            counts = dict(
                session.execute(
                    select(Update.staleness, func.count()).group_by(Update.staleness)
                ).all()
            )
            buckets = [
                (str(bound), sum(c for s, c in counts.items() if s <= bound))
                for bound in STALENESS_BUCKETS
            ]
            buckets.append(("+Inf", sum(counts.values())))
            histogram = HistogramMetricFamily(
                "fedge_update_staleness", "Staleness of accepted updates (versions behind)"
            )
            histogram.add_metric(
                [], buckets, sum_value=float(sum(s * c for s, c in counts.items()))
            )
            yield histogram

            aggregation = GaugeMetricFamily(
                "fedge_last_aggregation_seconds",
                "Seconds the latest version took to aggregate (streaming its updates in)",
                labels=["job"],
            )
            latest = (
                select(Version.job_id, func.max(Version.number).label("number"))
                .group_by(Version.job_id)
                .subquery()
            )
            for job_id, seconds in session.execute(
                select(Version.job_id, Version.aggregation_seconds).join(
                    latest,
                    (Version.job_id == latest.c.job_id) & (Version.number == latest.c.number),
                )
            ):
                aggregation.add_metric([str(job_id)], seconds)
            yield aggregation

            uploaded = CounterMetricFamily(
                "fedge_upload_bytes",
                "Bytes of accepted uploads as received, by job and uplink codec",
                labels=["job", "codec"],
            )
            codec = func.coalesce(Update.codec, "float32")
            for job_id, name, total in session.execute(
                select(Update.job_id, codec, func.sum(Update.upload_bytes)).group_by(
                    Update.job_id, codec
                )
            ):
                uploaded.add_metric([str(job_id), name], float(total or 0))
            yield uploaded

            yield from _privacy_families(session)
            yield from _fleet_families(session)
            yield from _evaluation_families(session)


_EPSILON_KEYS = (("headline", "epsilon"), ("pld", "epsilon_pld"), ("rdp", "epsilon_rdp"))


def _privacy_families(session: Session) -> Iterator[Any]:
    """A DP job's ε after its current version (by method), its z, C and budget in versions."""
    epsilon = GaugeMetricFamily(
        "fedge_privacy_epsilon",
        "ε at the job's δ after its current version (method: headline, pld, rdp)",
        labels=["job", "method"],
    )
    multiplier = GaugeMetricFamily(
        "fedge_privacy_noise_multiplier", "The noise multiplier z a DP job charges", labels=["job"]
    )
    clip_norm = GaugeMetricFamily(
        "fedge_privacy_clip_norm", "The clip norm C of a DP job's next version", labels=["job"]
    )
    budget = GaugeMetricFamily(
        "fedge_privacy_versions_within_budget",
        "Versions a DP job may publish within its epsilon_max",
        labels=["job"],
    )
    rows = session.execute(
        select(Job.id, Job.config, Job.privacy_state).where(Job.privacy_state.is_not(None))
    )
    for job_id, config, state in rows:
        if not state:  # a JSON null is no privacy state either
            continue
        job = str(job_id)
        reported = state.get("epsilon") or {}
        for method, key in (
            ("headline", "epsilon"),
            ("pld", "epsilon_pld"),
            ("rdp", "epsilon_rdp"),
        ):
            value = reported.get(key)
            if value is not None:
                epsilon.add_metric([job, method], value)
        z = (config.get("privacy") or {}).get("noise_multiplier")
        if z is not None:
            multiplier.add_metric([job], z)
        clip_norm.add_metric([job], state["clip_norm"])
        budget.add_metric([job], state["versions_within_budget"])
    yield from (epsilon, multiplier, clip_norm, budget)


def _fleet_families(session: Session) -> Iterator[Any]:
    """What the dashboard shows beyond the families above: devices, lease ends, norms, bytes."""
    devices = GaugeMetricFamily(
        "fedge_devices",
        "Registered devices by runtime and SDK version",
        labels=["runtime", "sdk_version"],
    )
    for runtime, sdk_version, count in session.execute(
        select(Device.runtime, Device.sdk_version, func.count()).group_by(
            Device.runtime, Device.sdk_version
        )
    ):
        devices.add_metric([runtime, sdk_version], count)
    yield devices

    closed = CounterMetricFamily(
        "fedge_leases_closed",
        "Leases ended, by job, status and reason (aborted:<reason>, deadline, silent, ...)",
        labels=["job", "status", "reason"],
    )
    for job_id, status, reason, count in session.execute(
        select(Lease.job_id, Lease.status, Lease.close_reason, func.count())
        .where(Lease.close_reason.is_not(None))
        .group_by(Lease.job_id, Lease.status, Lease.close_reason)
    ):
        closed.add_metric([str(job_id), status.value, reason or ""], count)
    yield closed

    rejected = CounterMetricFamily(
        "fedge_job_uploads_rejected", "Uploads refused, by job and reason", labels=["job", "reason"]
    )
    for refused_job, reason, count in session.execute(
        select(Rejection.job_id, Rejection.reason, func.count())
        .where(Rejection.job_id.is_not(None))
        .group_by(Rejection.job_id, Rejection.reason)
    ):
        rejected.add_metric([str(refused_job), reason], count)
    yield rejected

    clipped = CounterMetricFamily(
        "fedge_updates_clipped", "Accepted updates the norm bound clipped", labels=["job"]
    )
    uplink = CounterMetricFamily(
        "fedge_uplink_bytes", "Bytes of accepted updates as stored", labels=["job"]
    )
    waiting = GaugeMetricFamily(
        "fedge_updates_waiting", "Accepted updates not yet in a version", labels=["job"]
    )
    for job_id, n_clipped, size, n_waiting in session.execute(
        select(
            Update.job_id,
            func.sum(case((Update.clipped, 1), else_=0)),
            func.sum(Blob.size),
            func.sum(case((Update.version.is_(None), 1), else_=0)),
        )
        .join(Blob, Blob.sha256 == Update.delta_sha256)
        .group_by(Update.job_id)
    ):
        # float(): PostgreSQL sums a BIGINT as NUMERIC, which psycopg reads as a Decimal
        clipped.add_metric([str(job_id)], float(n_clipped or 0))
        uplink.add_metric([str(job_id)], float(size or 0))
        waiting.add_metric([str(job_id)], float(n_waiting or 0))
    yield from (clipped, uplink, waiting)


def _evaluation_families(session: Session) -> Iterator[Any]:
    """Each job's latest evaluated version: reports, mean and worst-10 % accuracy; live version."""
    reports = GaugeMetricFamily(
        "fedge_evaluation_reports", "Evaluation reports of a version", labels=["job", "version"]
    )
    mean = GaugeMetricFamily(
        "fedge_evaluation_accuracy_mean",
        "Federated mean accuracy over devices of a version",
        labels=["job", "version"],
    )
    worst = GaugeMetricFamily(
        "fedge_evaluation_accuracy_worst10",
        "Mean accuracy of the lowest decile of devices of a version",
        labels=["job", "version"],
    )
    live = GaugeMetricFamily("fedge_registry_live_version", "The live version", labels=["job"])
    latest = session.execute(
        select(Evaluation.job_id, func.max(Evaluation.version))
        .where(Evaluation.reported_at.is_not(None))
        .group_by(Evaluation.job_id)
    )
    for job_id, number in latest.all():
        rows = session.execute(
            select(Evaluation.loss, Evaluation.accuracy, Evaluation.num_examples).where(
                Evaluation.job_id == job_id,
                Evaluation.version == number,
                Evaluation.reported_at.is_not(None),
            )
        ).all()
        summary = summarize(
            [EvaluationSample(loss or 0.0, acc or 0.0, n or 0) for loss, acc, n in rows],
            tiers=False,
        )
        labels = [str(job_id), str(number)]
        reports.add_metric(labels, summary.reports)
        mean.add_metric(labels, summary.mean_accuracy)
        worst.add_metric(labels, summary.worst10_accuracy)
    for job_id, number in session.execute(
        select(Version.job_id, Version.number).where(Version.stage == Stage.LIVE)
    ):
        live.add_metric([str(job_id)], number)
    yield from (reports, mean, worst, live)
