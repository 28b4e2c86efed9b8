"""Compressed uploads over loopback: devices of two link classes get, and honour, two codecs."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from device_sdk.runner import LocalRunner
from device_sdk.session import SessionStats, device_session
from fedge.manifest import PlanManifest
from fedge.protocol import EligibilityFacts, Task
from fedge.wire import encode_update, update_size
from simulator.datasets import synthetic_fedprox

NUM_PARAMS = 610  # synthetic_logreg
BUDGET_SECONDS = 2.0
# Wi-Fi sends float32 within the budget; the cellular link fits nothing, so it gets the smallest.
WIFI = float(update_size("float32", NUM_PARAMS)) / BUDGET_SECONDS
CELLULAR = float(update_size("rot4", NUM_PARAMS)) / BUDGET_SECONDS / 10


class Recording(LocalRunner):
    """A device's runner that also keeps the tasks the coordinator handed it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tasks: list[Task] = []

    def perform(self, action):
        answer = super().perform(action)
        if isinstance(answer, Task):
            self.tasks.append(answer)
        return answer


def run_device(coordinator, manifest, local, *, uplink, seed, tasks=2):
    client = CoordinatorClient(coordinator.url)
    client.register(runtime="codec-test")
    rng = np.random.default_rng(seed)
    runner = Recording(
        client,
        manifest_for=lambda _sha: manifest,
        x=local.x,
        y=local.y,
        rng=rng,
        sleep=coordinator.clock.advance,
    )
    facts = EligibilityFacts(num_examples=len(local), uplink_bytes_per_second=uplink)
    stats = SessionStats()
    runner.run(
        device_session(
            lambda: facts, rng=rng, now=coordinator.clock.now, stats=stats, max_tasks=tasks
        )
    )
    return runner.tasks, stats


def upload_bytes_by_codec(coordinator, job_id):
    text = coordinator.admin.get("/metrics").text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "fedge_upload_bytes"]
    return {
        sample.labels["codec"]: sample.value
        for sample in family.samples
        if sample.labels["job"] == str(job_id) and sample.name.endswith("_total")
    }


def test_devices_on_two_links_get_two_codecs_and_their_updates_make_versions(coordinator):
    manifest = PlanManifest.from_json((coordinator.plans_dir / "synthetic_logreg.json").read_text())
    job = coordinator.create_job(
        coordinator.publish_plan(),
        mode="async",
        buffer_size=2,
        compression={"codecs": ["float32", "rot4"], "task_seconds": BUDGET_SECONDS},
    )
    data = synthetic_fedprox(alpha=0.5, beta=0.5, num_devices=4, rng=np.random.default_rng(0))
    links = [WIFI, CELLULAR, WIFI, CELLULAR]

    runs = [
        run_device(coordinator, manifest, local, uplink=uplink, seed=seed)
        for seed, (local, uplink) in enumerate(zip(data, links, strict=True))
    ]

    codecs = [{task.codec for task in tasks} for tasks, _ in runs]
    assert codecs == [{"float32"}, {"rot4"}, {"float32"}, {"rot4"}]
    assert [stats.uploads_accepted for _, stats in runs] == [2, 2, 2, 2]
    versions = coordinator.versions(job["id"])
    assert versions[-1]["number"] == 4
    uploaded = upload_bytes_by_codec(coordinator, job["id"])
    assert uploaded["rot4"] == 4 * update_size("rot4", NUM_PARAMS)
    assert uploaded["float32"] == 4 * (20 + 4 * NUM_PARAMS)  # format 1: header, values, CRC
    assert sum(v["upload_bytes"] for v in versions) == sum(uploaded.values())
    final = coordinator.weights(job["id"], 4)
    assert np.isfinite(final).all()
    assert not np.array_equal(final, coordinator.weights(job["id"], 0))


@pytest.mark.parametrize(
    ("codec", "seed_offset", "reason"),
    [("rot2", 0, "codec_mismatch"), ("rot4", 1, "seed_mismatch")],
)
def test_an_upload_in_another_codec_or_seed_than_its_lease_is_a_400_with_its_reason(
    coordinator, codec, seed_offset, reason
):
    job = coordinator.create_job(
        coordinator.publish_plan(), mode="async", buffer_size=1, compression={"codecs": ["rot4"]}
    )
    device = coordinator.device()
    task = device.check_in(EligibilityFacts(num_examples=50))
    body = encode_update(
        np.full(NUM_PARAMS, 0.01, np.float32),
        codec,
        seed=task.codec_seed + seed_offset,
        rng=np.random.default_rng(0),
    )

    with pytest.raises(ProtocolError) as refused:
        device.upload(task, body, num_examples=10)

    assert (refused.value.status, refused.value.reason) == (400, reason)
    assert coordinator.job(job["id"])["current_version"] == 0
