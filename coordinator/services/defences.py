"""A version's poisoning defences at its close: adaptive zeroing, then a robust rule or the mean.

Only a job that configures ``aggregation.zeroing`` or ``aggregation.robust`` comes here
(:func:`active`); every other job keeps the streaming fold of
:mod:`coordinator.services.versions` unchanged. Both modes are served: a round's reports or a
FedBuff buffer's K updates, read from their stored blobs one at a time.

- **Zeroing** is decided here from each update's stored raw norm (before any server clipping,
  ``updates.norm``), against the zeroing norm the previous version left
  (``versions.defences.next_zeroing_estimate``), so every update of one version meets the same
  bar and a replay of the close decides the same. A zeroed update was accepted, and stays so:
  its device's receipt said ``accepted`` and its lease is completed (it is no protocol error,
  and a device that cannot tell gets no oracle to probe the threshold with); it enters the
  fold as zeros with its weight (TFF's ``zeroing_factory``), is counted in the version's
  metadata (``zeroed``) and as a rejection with reason ``zeroed``
  (``fedge_updates_rejected{reason="zeroed"}``), written in the version's transaction.
- **Robust rules** stack the version's deltas (``coordinator.aggregation.robust``): memory
  O(k · model size) for the close, where the mean needs O(model size).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from coordinator.aggregation import (
    FloatArray,
    OptimizerState,
    Zeroing,
    ZeroingStep,
    configured,
)
from coordinator.config import JobCreate
from coordinator.db.models import Job, JobMode, Rejection, Update, Version
from fedge.protocol import Reason


def active(config: JobCreate) -> bool:
    """Whether ``config`` asks for a defence, so its versions are folded here."""
    return config.aggregation.zeroing is not None or config.aggregation.robust is not None


@dataclass(frozen=True)
class DefendedStep:
    """The new weights and optimizer state, the version's measurements, and its metadata."""

    weights: FloatArray
    optimizer_state: OptimizerState
    num_examples: int
    mean_staleness: float
    norm_mean: float
    norm_var: float
    metadata: dict[str, Any]


def fold(
    session: Session,
    job: Job,
    config: JobCreate,
    updates: Sequence[Update],
    deltas: Iterable[FloatArray],
    *,
    weights: FloatArray,
    optimizer_state: OptimizerState,
    now: float,
) -> DefendedStep:
    """Zero the outliers among ``updates`` (``deltas`` their blobs, in order), fold the rest.

    Raises :class:`~coordinator.aggregation.NonFiniteError` if the step would overflow the
    model; nothing is written then (the rejections are added only after the step succeeded).
    """
    aggregation = configured(config.aggregation)
    asynchronous = job.mode == JobMode.ASYNC
    zeroing = _zeroing_step(session, job, aggregation.zeroing, updates)
    screened = _screened(deltas, zeroing)
    metadata: dict[str, Any] = {}
    if aggregation.robust is not None:
        scales = (aggregation.staleness(u.staleness) if asynchronous else 1.0 for u in updates)
        new_weights, new_state, robust = aggregation.robust.step(
            weights,
            optimizer_state,
            zip(screened, scales, strict=True),
            count=len(updates),
            server_optimizer=aggregation.server_optimizer,
        )
        norm_mean, norm_var = robust.update_norm_mean, robust.update_norm_variance
        metadata |= {"robust": aggregation.robust.rule, "trimmed_per_side": robust.trimmed_per_side}
    elif asynchronous:
        buffer = aggregation.fedbuff
        state = buffer.init(optimizer_state.num_params)
        for update, delta in zip(updates, screened, strict=True):
            state = buffer.accept(state, delta, update.num_examples, update.staleness)
        new_weights, new_state, _, measured = buffer.flush(weights, state, optimizer_state)
        norm_mean, norm_var = measured.update_norm_mean, measured.update_norm_variance
    else:
        pairs = ((delta, u.num_examples) for u, delta in zip(updates, screened, strict=True))
        new_weights, new_state, rounded = aggregation.fedavg.step(weights, optimizer_state, pairs)
        norm_mean, norm_var = rounded.update_norm_mean, rounded.update_norm_variance
    if zeroing is not None:
        metadata |= {
            "zeroed": zeroing.count,
            "zeroing_norm": zeroing.threshold,
            "next_zeroing_estimate": zeroing.next_estimate,
        }
        _record_zeroed(session, job, updates, zeroing, now=now)
    return DefendedStep(
        weights=new_weights,
        optimizer_state=new_state,
        num_examples=sum(u.num_examples for u in updates),
        mean_staleness=(sum(u.staleness for u in updates) / len(updates)) if asynchronous else 0.0,
        norm_mean=norm_mean,
        norm_var=norm_var,
        metadata=metadata,
    )


def zeroing_estimate(session: Session, job: Job, zeroing: Zeroing) -> float:
    """The quantile estimate q̂ the job's next version is judged by: the last one's, or q̂₀."""
    if job.current_version == 0:
        return zeroing.initial_estimate
    last = session.get(Version, (job.id, job.current_version))
    recorded = None if last is None or last.defences is None else last.defences
    if recorded is None or "next_zeroing_estimate" not in recorded:
        return zeroing.initial_estimate  # zeroing was off, or the version predates it
    return float(recorded["next_zeroing_estimate"])


def _zeroing_step(
    session: Session, job: Job, zeroing: Zeroing | None, updates: Sequence[Update]
) -> ZeroingStep | None:
    if zeroing is None:
        return None
    return zeroing.step(zeroing_estimate(session, job, zeroing), [u.norm for u in updates])


def _screened(deltas: Iterable[FloatArray], zeroing: ZeroingStep | None) -> Iterator[FloatArray]:
    """The deltas as they enter the fold: zeros in place of each zeroed one."""
    for index, delta in enumerate(deltas):
        if zeroing is not None and zeroing.zeroed[index]:
            yield np.zeros_like(delta)
        else:
            yield delta


def _record_zeroed(
    session: Session, job: Job, updates: Sequence[Update], zeroing: ZeroingStep, *, now: float
) -> None:
    for update, zeroed in zip(updates, zeroing.zeroed, strict=True):
        if zeroed:
            session.add(
                Rejection(
                    job_id=job.id,
                    device_id=update.device_id,
                    lease_id=update.lease_id,
                    reason=Reason.ZEROED,
                    at=now,
                )
            )
