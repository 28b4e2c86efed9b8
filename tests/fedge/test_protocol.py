"""The device protocol, defined once in fedge.protocol and served by the coordinator."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.api.app import create_app
from coordinator.errors import CoordinatorError
from coordinator.settings import Settings
from fedge import protocol
from fedge.protocol import CheckInResponse, EligibilityFacts, Reason, Task, UploadReceipt, parse

ROOT = Path(__file__).resolve().parents[2]

TASK = {
    "lease_id": "l",
    "job_id": 1,
    "plan_sha256": "p" * 64,
    "plan_url": "/v1/plans/p",
    "global_version": 0,
    "weights_url": "/w",
    "weights_sha256": "w" * 64,
    "hparams": {"local_epochs": 1, "batch_size": 8, "learning_rate": 0.1, "momentum": 0.0},
    "deadline": 10.0,
    "round": None,
    "heartbeat_seconds": 30.0,
}


def test_a_task_with_fields_this_sdk_does_not_know_still_parses():
    # A newer coordinator may add fields anywhere; devices already in the field keep working.
    raw = {**TASK, "priority": "high", "hparams": {**TASK["hparams"], "warmup": 3}}

    task = parse(Task, raw)

    assert task.heartbeat_seconds == 30.0
    assert task.hparams.local_epochs == 1
    assert task.hparams.mu == 0.0  # absent: the one HyperParameters' default


def test_a_check_in_answer_parses_its_nested_task_or_retry_window():
    with_task = parse(CheckInResponse, {"task": TASK, "retry": None})
    with_retry = parse(CheckInResponse, {"retry": {"min": 1, "max": 2, "reason": "busy"}})

    assert isinstance(with_task.task, Task) and with_task.retry is None
    assert with_retry.task is None and with_retry.retry is not None
    assert with_retry.retry.reason == "busy"


def test_an_answer_missing_a_required_field_is_refused():
    with pytest.raises(TypeError):
        parse(UploadReceipt, {"status": "accepted", "lease_id": "l"})


def test_the_coordinator_serves_the_device_paths_the_protocol_names():
    app = create_app(Settings(db_url="sqlite://", admin_token="x" * 32))
    served = set(app.openapi()["paths"])
    paths = [protocol.REGISTER, protocol.CHECK_IN, protocol.PLAN, protocol.WEIGHTS]
    paths += [protocol.UPDATE, protocol.HEARTBEAT, protocol.ABORT]

    assert set(paths) <= served


def test_the_spec_documents_request_bounds_and_refuses_unknown_request_fields():
    app = create_app(Settings(db_url="sqlite://", admin_token="x" * 32))
    schemas = app.openapi()["components"]["schemas"]

    facts = schemas["EligibilityFacts"]
    assert facts["additionalProperties"] is False
    assert facts["properties"]["num_examples"]["minimum"] == 0
    assert facts["properties"]["runtime"]["maxLength"] == 64
    assert facts["required"] == ["num_examples"]
    # Field docs are written once, beside the fields.
    assert "examples" in facts["properties"]["num_examples"]["description"]
    assert "FedProx" in schemas["HyperParameters"]["description"]
    assert "additionalProperties" not in schemas["Task"]  # answers may grow


def test_every_coordinator_error_reason_is_a_protocol_reason():
    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    reasons = {error.reason for error in subclasses(CoordinatorError)}

    assert reasons <= set(Reason)


def test_no_message_is_defined_twice():
    # The protocol's messages are dataclasses in fedge/protocol.py; no other module of the
    # product defines a class of the same name (the device and the coordinator import them).
    names = {
        name
        for name, value in vars(protocol).items()
        if isinstance(value, type) and dataclasses.is_dataclass(value)
    }
    names.add("HyperParameters")
    pattern = re.compile(r"^class (\w+)\b", re.M)
    owners: dict[str, list[str]] = {}
    for room in ("fedge", "device_sdk", "coordinator", "simulator", "models"):
        for path in (ROOT / room).rglob("*.py"):
            for name in pattern.findall(path.read_text()):
                if name in names:
                    owners.setdefault(name, []).append(str(path.relative_to(ROOT)))

    twice = {name: where for name, where in owners.items() if len(where) > 1}
    assert twice == {}
    assert owners["HyperParameters"] == ["fedge/manifest.py"]


def test_the_protocol_imports_nothing_beyond_the_standard_library_and_fedge():
    code = (
        "import sys, fedge.protocol\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'fastapi', 'httpx', 'sqlalchemy', 'coordinator', 'device_sdk'}]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_eligibility_facts_have_the_devices_defaults():
    facts = EligibilityFacts(num_examples=3)

    assert dataclasses.asdict(facts) == {
        "num_examples": 3,
        "charging": True,
        "idle": True,
        "unmetered": True,
        "free_memory_mb": 1024.0,
        "runtime": "",
        "sdk_version": "",
        "uplink_bytes_per_second": None,
        "downlink_bytes_per_second": None,
    }
