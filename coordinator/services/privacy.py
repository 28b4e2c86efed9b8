"""A DP job's rules on the request path: the clip norm C of a task, its re-check, the window.

The device clips its delta to the task's C (``device_sdk.clipping``); the coordinator only
re-checks and rejects (``norm_too_large``), whatever the job's ``norm_policy``: a device that
did not clip is refused, never silently fixed. The capped participation model (docs/privacy.md)
is enforced here too: a device contributes at most once in any W consecutive versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from coordinator.config import JobCreate
from coordinator.db.models import Job, Version
from coordinator.errors import InvalidUpdate
from coordinator.privacy import AdaptiveClipping, CappedParticipation, FixedClipping
from coordinator.services import admission
from fedge.protocol import METRIC_WITHIN_CLIP, Reason

# The device's float32 rounding of a clipped delta stays far inside this (device_sdk.clipping).
NORM_TOLERANCE = 1e-6


def is_private(config: JobCreate) -> bool:
    """Whether the job publishes differentially private versions."""
    return config.privacy.mechanism == "gaussian"


def clip_norm_for(job: Job, config: JobCreate) -> float | None:
    """The C of ``job``'s next version, which a task issued now is given; None: no DP.

    Fixed clipping: the config's C. Adaptive: the C the last version's step left on the job
    (Andrew et al., NeurIPS 2021), which every update of the next version is bounded by.
    """
    clipping = config.privacy.clipping
    if not is_private(config) or clipping is None:
        return None
    if isinstance(clipping, FixedClipping):
        return clipping.clip_norm
    state = job.privacy_state or {}
    return float(state.get("clip_norm", clipping.initial_clip_norm))


def lease_clip_norm(session: Session, job: Job, config: JobCreate, base_version: int) -> float:
    """The C a task trained from ``base_version`` was given: the one after that version."""
    clipping = config.privacy.clipping
    if isinstance(clipping, FixedClipping):
        return clipping.clip_norm
    if not isinstance(clipping, AdaptiveClipping):  # pragma: no cover - validated
        raise RuntimeError("a DP job without clipping")
    if base_version == 0:
        return clipping.initial_clip_norm
    made = session.get(Version, (job.id, base_version))
    if made is None or made.privacy is None:  # pragma: no cover - every DP version has it
        raise RuntimeError(f"version {base_version} of job {job.id} has no privacy metadata")
    return float(made.privacy["next_clip_norm"])


def within_clip(config: JobCreate, metrics: dict[str, Any]) -> None:
    """Refuse an adaptive job's upload that does not say whether its norm was within C."""
    if not isinstance(config.privacy.clipping, AdaptiveClipping):
        return
    bit = metrics.get(METRIC_WITHIN_CLIP)
    if isinstance(bit, bool) or bit not in (0, 1):
        raise InvalidUpdate(
            f"this DP job clips adaptively: the upload's metrics must hold "
            f"{METRIC_WITHIN_CLIP!r} = 1.0 (the delta's norm was at most the task's clip_norm) "
            "or 0.0"
        )


def check_norm(norm: float, clip_norm: float) -> None:
    """Refuse (400 ``norm_too_large``) an update longer than the task's C, with tolerance."""
    if norm > clip_norm * (1.0 + NORM_TOLERANCE):
        raise InvalidUpdate(
            f"update norm {norm:.6g} exceeds this DP job's clip norm {clip_norm:.6g}: the "
            "device must clip its delta to the task's clip_norm before uploading it",
            reason=Reason.NORM_TOO_LARGE,
        )


def window_refusal(session: Session, job: Job, config: JobCreate, device_id: str) -> str | None:
    """Why ``device_id`` may not contribute to ``job``'s next version, or None if it may.

    Capped participation: no device contributes twice within any W consecutive versions. The
    count is the contribution cap's (:func:`coordinator.services.admission.contributions_in_window`
    with one update per window): an update still waiting for a version counts, a report a
    failed round carried on included, so it blocks a second one in the same version.
    """
    participation = config.privacy.participation
    if not is_private(config) or not isinstance(participation, CappedParticipation):
        return None
    window = participation.window
    if admission.contributions_in_window(session, job, device_id, window_versions=window) == 0:
        return None
    return (
        f"already has an update in the {window} versions up to the next, or waiting for it "
        f"(privacy window: this DP job takes one update per device in any {window} versions)"
    )
