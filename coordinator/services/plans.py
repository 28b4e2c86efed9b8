"""Training plans: registered from blobs uploaded beforehand, checked against their manifest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.config import TaskConfig
from coordinator.db.blobs import get_blob
from coordinator.db.models import Plan
from coordinator.errors import BadRequest, Conflict, NotFound
from coordinator.services.memo import ImmutableRows
from fedge.errors import FedgeError
from fedge.manifest import HyperParameters, PlanManifest
from fedge.wire import decode_vector


def register_plan(
    session: Session,
    *,
    manifest: dict[str, Any],
    plan_sha256: str,
    initial_weights_sha256: str,
    inference_sha256: str | None = None,
    now: float,
) -> Plan:
    """Register a plan whose bytes are already stored; the manifest must describe them."""
    try:
        parsed = PlanManifest.from_dict(manifest)
        parsed.verify_plan(get_blob(session, plan_sha256))
        initial = decode_vector(
            get_blob(session, initial_weights_sha256), expected_length=parsed.num_params
        )
        if inference_sha256 is not None:
            if inference_sha256 != parsed.inference_sha256:
                raise BadRequest("inference template does not match the manifest's sha256")
            parsed.render_inference(get_blob(session, inference_sha256), initial)
    except NotFound as exc:
        raise BadRequest(f"upload the blob first: {exc.message}") from exc
    except FedgeError as exc:
        raise BadRequest(f"plan does not match its manifest: {exc}") from exc
    if parsed.initial_weights_sha256 != initial_weights_sha256:
        raise BadRequest("initial weights do not match the manifest's initial_weights_sha256")
    existing = session.scalar(select(Plan).where(Plan.plan_sha256 == plan_sha256))
    if existing is not None:
        if existing.initial_weights_sha256 != initial_weights_sha256:
            raise Conflict(f"plan {plan_sha256[:12]}… is registered with other initial weights")
        return existing
    plan = Plan(
        name=parsed.name,
        plan_sha256=plan_sha256,
        initial_weights_sha256=initial_weights_sha256,
        manifest=manifest,
        num_params=parsed.num_params,
        created_at=now,
    )
    session.add(plan)
    session.flush()
    return plan


_plans = ImmutableRows(Plan)  # a plan never changes once registered


def get_plan(session: Session, plan_id: int) -> Plan:
    """The plan with ``plan_id``; :class:`NotFound` if none. Read from memory once committed."""
    plan = _plans.get(session, plan_id)
    if plan is None:
        raise NotFound(f"no plan {plan_id}")
    return plan


def inference_model(session: Session, plan: Plan, weights: bytes) -> bytes:
    """An inference-only ``.tflite`` of ``plan`` holding the encoded ``weights``."""
    manifest = manifest_of(plan)
    if manifest.inference_sha256 is None:
        raise NotFound(f"plan {plan.id} was published without an inference template")
    try:
        template = get_blob(session, manifest.inference_sha256)
    except NotFound:
        raise NotFound(f"plan {plan.id}'s inference template was not uploaded") from None
    return manifest.render_inference(template, decode_vector(weights))


def manifest_of(plan: Plan) -> PlanManifest:
    """The parsed manifest of a registered plan (validated when it was registered)."""
    return PlanManifest.from_dict(plan.manifest)


def task_hparams(plan: Plan, local: TaskConfig) -> HyperParameters:
    """The hyper-parameters a task of the job trains with: the job's, else the plan's defaults."""
    defaults = manifest_of(plan).hparams
    return HyperParameters(
        local_epochs=local.local_epochs or defaults.local_epochs,
        batch_size=local.batch_size or defaults.batch_size,
        learning_rate=local.learning_rate or defaults.learning_rate,
        momentum=local.momentum if local.momentum is not None else defaults.momentum,
        mu=local.mu if local.mu is not None else defaults.mu,
    )
