"""Device sessions — the sans-IO protocol logic performed for real — train a live job."""

import httpx
import numpy as np

from device_sdk.client import CoordinatorClient
from device_sdk.runner import LocalRunner
from device_sdk.session import SessionStats, device_session
from fedge.manifest import PlanManifest
from fedge.protocol import EligibilityFacts
from simulator.datasets import synthetic_fedprox


class FlakyTransport(httpx.HTTPTransport):
    """Drops every third request on the way back: the server did the work, the device never
    heard — the case that makes uploads need to be idempotent."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def handle_request(self, request):
        response = super().handle_request(request)
        self.calls += 1
        if self.calls % 3 == 0:
            response.read()
            raise httpx.ReadError("connection reset by the test", request=request)
        return response


def run_devices(coordinator, *, transport_factory=None, devices=3, tasks=2):
    manifest = PlanManifest.from_json((coordinator.plans_dir / "synthetic_logreg.json").read_text())
    data = synthetic_fedprox(alpha=0.5, beta=0.5, num_devices=devices, rng=np.random.default_rng(0))
    all_stats = []
    for seed, local in enumerate(data):
        transport = transport_factory() if transport_factory else None
        client = CoordinatorClient(coordinator.url, transport=transport)
        client.register(runtime="session-test")
        rng = np.random.default_rng(seed)
        runner = LocalRunner(
            client,
            manifest_for=lambda _sha: manifest,
            x=local.x,
            y=local.y,
            rng=rng,
            sleep=coordinator.clock.advance,  # virtual time: no real sleeping
        )
        facts = EligibilityFacts(num_examples=len(local))
        stats = SessionStats()
        runner.run(
            device_session(
                lambda f=facts: f, rng=rng, now=coordinator.clock.now, stats=stats, max_tasks=tasks
            )
        )
        all_stats.append(stats)
    return all_stats


def test_device_sessions_train_a_job_through_the_real_protocol(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=2)

    stats = run_devices(coordinator)

    assert [s.uploads_accepted for s in stats] == [2, 2, 2]
    versions = coordinator.versions(job["id"])
    assert versions[-1]["number"] == 3 and sum(v["num_updates"] for v in versions) == 6


def test_through_a_connection_that_drops_replies_every_update_is_counted_once(coordinator):
    job = coordinator.create_job(coordinator.publish_plan(), mode="async", buffer_size=1)

    stats = run_devices(coordinator, transport_factory=FlakyTransport)

    assert sum(s.failures for s in stats) > 0  # the transport really did fail
    assert [s.uploads_accepted for s in stats] == [2, 2, 2]
    history = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/metrics").json()
    assert history["current_version"] == 6  # six leases, six updates: none lost, none twice
    assert sum(v["accepted"] for v in history["versions"]) == 6
