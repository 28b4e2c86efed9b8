"""A coordinator's world for service specifications: one plan, jobs, devices and a manual clock.

Everything runs in the test's session, inside the outer transaction ``conftest.py`` rolls back;
services are called directly, as the routes call them, with the clock's ``now``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.config import JobCreate
from coordinator.db.blobs import put_blob
from coordinator.db.models import Device, Job, Lease, LeaseStatus, Plan, Round
from coordinator.errors import CoordinatorError
from coordinator.services import devices, jobs, leasing, maintenance, plans, updates
from coordinator.settings import Settings
from fedge.clock import ManualClock
from fedge.manifest import HyperParameters, PlanManifest, TensorSpec, WeightSlice
from fedge.protocol import CheckInResponse, EligibilityFacts, Task, UploadReceipt
from fedge.wire import decode_vector, encode_vector

NUM_PARAMS = 4
INITIAL_WEIGHTS = np.array([0.5, -0.5, 1.0, 2.0], np.float32)
PLAN_BYTES = b"a tiny plan: the services never run it"


def delta(*values: float) -> bytes:
    """An encoded weight delta: one value repeated, or one value per weight."""
    vector = np.full(NUM_PARAMS, values[0]) if len(values) == 1 else np.array(values)
    return encode_vector(vector.astype(np.float32))


def eligible(**changes: Any) -> EligibilityFacts:
    """The facts of a device every default job takes, with ``changes``."""
    return EligibilityFacts(**{"num_examples": 50, **changes})


@dataclass
class World:
    """The session, a clock, settings and a registered plan; builders for jobs and devices."""

    session: Session
    # More sessions on the same connection, for services that open their own transaction.
    sessions: sessionmaker[Session]
    clock: ManualClock
    settings: Settings
    plan: Plan

    @property
    def now(self) -> float:
        return self.clock.now()

    def job(
        self,
        mode: str = "async",
        *,
        population: dict[str, Any] | None = None,
        task: dict[str, Any] | None = None,
        privacy: dict[str, Any] | None = None,
        max_versions: int | None = None,
        compression: dict[str, Any] | None = None,
        **aggregation: Any,
    ) -> Job:
        """A running job of the plan; keyword arguments are its aggregation config."""
        request = JobCreate.model_validate(
            {
                "name": "spec job",
                "plan_id": self.plan.id,
                "aggregation": {"mode": mode, **aggregation},
                "population": population or {},
                "task": task or {},
                "privacy": privacy or {},
                "max_versions": max_versions,
                "compression": compression or {},
            }
        )
        return jobs.create_job(self.session, request, now=self.now, allow_seeded_noise=True)

    def device(self) -> Device:
        """A newly registered device."""
        device_id, _ = devices.register(self.session, runtime="test", sdk_version="0", now=self.now)
        return self.session.get_one(Device, device_id)

    def check_in(self, device: Device, facts: EligibilityFacts | None = None) -> CheckInResponse:
        """``device`` checks in now with ``facts`` (eligible for every default job)."""
        return leasing.check_in(
            self.session, device, facts or eligible(), now=self.now, settings=self.settings
        )

    def task(self, device: Device, facts: EligibilityFacts | None = None) -> Task:
        """The task ``device`` gets by checking in now; fails the test if it gets none."""
        answer = self.check_in(device, facts)
        assert answer.task is not None, answer.retry
        return answer.task

    def upload(
        self,
        device: Device,
        task: Task,
        body: bytes,
        *,
        num_examples: int = 10,
        base_version: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> UploadReceipt:
        """``device`` uploads ``body`` for ``task`` now, with ``metrics`` (none by default)."""
        return updates.upload(
            self.session,
            device,
            task.lease_id,
            body,
            base_version=task.global_version if base_version is None else base_version,
            num_examples=num_examples,
            metrics=metrics or {},
            now=self.now,
        )

    def record_rejection(self, error: CoordinatorError, device: Device, task: Task) -> None:
        """Count a refused upload as the route does, in a transaction of its own."""
        self.session.flush()
        updates.record_rejection(
            self.sessions, error, device_id=device.id, lease_id=task.lease_id, now=self.now
        )

    def lease(self, task: Task) -> Lease:
        """The lease behind ``task``, as the database holds it once this session is flushed."""
        self.session.flush()  # what the route's commit would write, then what others wrote
        lease = self.session.get_one(Lease, task.lease_id)
        self.session.refresh(lease)
        return lease

    def active_leases(self, device: Device) -> list[Lease]:
        """``device``'s leases still marked active."""
        return list(
            self.session.scalars(
                select(Lease).where(
                    Lease.device_id == device.id, Lease.status == LeaseStatus.ACTIVE
                )
            )
        )

    def sweep(self) -> None:
        """The periodic upkeep runs now, in its own transactions, after this session's writes."""
        self.session.flush()  # the routes commit before the sweep can see anything
        maintenance.sweep(self.sessions, now=self.now)

    def rounds(self, job: Job) -> list[Round]:
        """``job``'s rounds, oldest first, as the database holds them after a flush."""
        self.session.flush()
        statement = select(Round).where(Round.job_id == job.id).order_by(Round.number)
        return list(self.session.scalars(statement.execution_options(populate_existing=True)))

    def current_version(self, job: Job) -> int:
        """``job``'s current version, as the database holds it."""
        self.session.flush()
        self.session.refresh(job)
        return job.current_version

    def weights(self, job: Job, number: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The weights of version ``number`` of ``job``."""
        return decode_vector(jobs.version_weights(self.session, job.id, number))


def register_tiny_plan(session: Session, *, now: float, num_params: int = NUM_PARAMS) -> Plan:
    """A plan of ``num_params`` weights whose bytes are a stand-in: no TensorFlow needed.

    Its initial weights are :data:`INITIAL_WEIGHTS`, or zeros for any other size.
    """
    initial = INITIAL_WEIGHTS if num_params == NUM_PARAMS else np.zeros(num_params, np.float32)
    weights = encode_vector(initial)
    inputs = num_params - 1
    plan_bytes = PLAN_BYTES if num_params == NUM_PARAMS else PLAN_BYTES + b" %d" % num_params
    manifest = PlanManifest(
        name="tiny",
        version="1",
        plan_file="tiny.tflite",
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        plan_bytes=len(plan_bytes),
        inputs={"x": TensorSpec((None, inputs), "float32"), "y": TensorSpec((None,), "int32")},
        num_classes=1,
        num_params=num_params,
        weights_layout=(
            WeightSlice("dense/kernel", (inputs, 1), 0, inputs),
            WeightSlice("dense/bias", (1,), inputs, 1),
        ),
        optimizer="sgd",
        hparams=HyperParameters(learning_rate=0.1),
        initial_weights_file="tiny.weights",
        initial_weights_sha256=hashlib.sha256(weights).hexdigest(),
        created_by="tests",
    )
    return plans.register_plan(
        session,
        manifest=json.loads(manifest.to_json()),
        plan_sha256=put_blob(session, plan_bytes, now=now),
        initial_weights_sha256=put_blob(session, weights, now=now),
        now=now,
    )
