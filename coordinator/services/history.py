"""A job's metrics history: per version, what went in and the divergence signals to watch."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.db.models import Lease, Rejection, Round, Update, Version
from coordinator.services.jobs import get_job

EVAL_KEYS = ("eval_loss", "eval_accuracy")


def job_history(session: Session, job_id: int) -> dict[str, Any]:
    """Per version, what went in and the divergence signals; plus job-wide counters.

    Each version lists its accepted updates, examples, mean staleness, the mean and variance of
    update norms, aggregation time, a DP version's privacy metadata (ε, δ, z, C, n_actual),
    and the evaluation devices reported of it.
    """
    job = get_job(session, job_id)
    evaluations = _evaluations(session, job_id)
    versions = [
        {
            "version": v.number,
            "created_at": v.created_at,
            "accepted": v.num_updates,
            "examples": v.num_examples,
            "mean_staleness": v.mean_staleness,
            "update_norm_mean": v.update_norm_mean,
            "update_norm_variance": v.update_norm_var,
            "aggregation_seconds": v.aggregation_seconds,
            **({} if v.privacy is None else {"privacy": v.privacy}),
            **({} if v.defences is None else {"defences": v.defences}),
            **evaluations.get(v.number, {}),
        }
        for v in session.scalars(
            select(Version).where(Version.job_id == job_id).order_by(Version.number)
        )
    ]
    leases = dict(
        session.execute(
            select(Lease.status, func.count()).where(Lease.job_id == job_id).group_by(Lease.status)
        ).all()
    )
    rejections = dict(
        session.execute(
            select(Rejection.reason, func.count())
            .where(Rejection.job_id == job_id)
            .group_by(Rejection.reason)
        ).all()
    )
    rounds = dict(
        session.execute(
            select(Round.status, func.count()).where(Round.job_id == job_id).group_by(Round.status)
        ).all()
    )
    return {
        "job": job.id,
        "mode": job.mode.value,
        "status": job.status.value,
        "current_version": job.current_version,
        "versions": versions,
        "leases": {status.value: count for status, count in leases.items()},
        "rejected": rejections,
        "rounds": {status.value: count for status, count in rounds.items()},
    }


def _evaluations(session: Session, job_id: int) -> dict[int, dict[str, float]]:
    """Example-weighted means of the evaluations devices reported of each base version."""
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    weights: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rows = session.execute(
        select(Update.base_version, Update.num_examples, Update.metrics).where(
            Update.job_id == job_id
        )
    )
    for base, examples, metrics in rows:
        for key in EVAL_KEYS:
            value = metrics.get(key)
            if isinstance(value, int | float):
                sums[base][key] += float(value) * examples
                weights[base][key] += examples
    return {
        base: {key: sums[base][key] / weights[base][key] for key in sums[base]} for base in sums
    }
