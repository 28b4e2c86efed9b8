"""Loopback end to end: real device sessions evaluate versions; the registry's gates act on it."""

from __future__ import annotations

import numpy as np

from device_sdk.client import CoordinatorClient
from device_sdk.runner import LocalRunner
from device_sdk.session import SessionStats, device_session
from fedge.manifest import PlanManifest
from fedge.protocol import EligibilityFacts
from simulator.datasets import synthetic_fedprox


def run_devices(coordinator, *, devices: int, tasks: int, tier_of=lambda i: "") -> list:
    manifest = PlanManifest.from_json((coordinator.plans_dir / "synthetic_logreg.json").read_text())
    data = synthetic_fedprox(alpha=0.5, beta=0.5, num_devices=devices, rng=np.random.default_rng(1))
    all_stats = []
    for seed, local in enumerate(data):
        client = CoordinatorClient(coordinator.url)
        client.register(runtime="evaluation-test")
        rng = np.random.default_rng(seed)
        runner = LocalRunner(
            client,
            manifest_for=lambda _sha: manifest,
            x=local.x,
            y=local.y,
            rng=rng,
            sleep=coordinator.clock.advance,
        )
        facts = EligibilityFacts(num_examples=len(local))
        stats = SessionStats()
        runner.run(
            device_session(
                lambda f=facts: f,
                rng=rng,
                now=coordinator.clock.now,
                stats=stats,
                max_tasks=tasks,
                tier=tier_of(seed),
            )
        )
        all_stats.append(stats)
    return all_stats


def create_job(coordinator, **sections):
    body = {
        "name": "evaluated",
        "plan_id": coordinator.publish_plan(),
        "aggregation": {"mode": "async", "buffer_size": 2},
        **sections,
    }
    response = coordinator.admin.post("/v1/admin/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_devices_evaluate_on_their_held_out_split_and_the_gate_makes_a_version_live(coordinator):
    job = create_job(
        coordinator,
        evaluation={"fraction": 1.0, "min_reports": 2, "max_reports": 2},
        promotion={"auto": True, "min_mean_accuracy": 0.0},
    )

    # Two devices evaluate version 0 (its max_reports), two train version 1; then again.
    stats = run_devices(coordinator, devices=4, tasks=1, tier_of=lambda i: "ab"[i % 2])
    stats += run_devices(coordinator, devices=4, tasks=1, tier_of=lambda i: "ab"[i % 2])

    assert [s.evaluations_reported for s in stats] == [1, 1, 0, 0] * 2
    assert [s.uploads_accepted for s in stats] == [0, 0, 1, 1] * 2
    registry = coordinator.admin.get(f"/v1/admin/jobs/{job['id']}/registry").json()
    evaluated = [v for v in registry["versions"] if v["evaluation"] is not None]
    assert evaluated, registry
    first = evaluated[0]
    summary = first["evaluation"]
    assert summary["reports"] >= 1 and 0.0 <= summary["worst10_accuracy"] <= 1.0
    assert sum(summary["histogram"]) == summary["reports"]
    assert set(summary["by_tier"]) <= {"a", "b"} and summary["by_tier"]
    assert registry["live"] == 1, registry["history"]  # 2 reports each passed the gate
    moves = [(m["version"], m["to_stage"], m["actor"]) for m in registry["history"]]
    assert moves == [(0, "live", "gate"), (0, "retired", "gate"), (1, "live", "gate")]
    assert [v["stage"] for v in registry["versions"]] == ["retired", "live", "candidate"]
    metrics = coordinator.admin.get("/metrics").text
    assert f'fedge_registry_live_version{{job="{job["id"]}"}} 1.0' in metrics
    assert "fedge_evaluation_accuracy_worst10{" in metrics
    one = coordinator.admin.get(
        f"/v1/admin/jobs/{job['id']}/versions/{first['lineage']['version']}/evaluation"
    ).json()
    assert one["summary"]["reports"] == summary["reports"]


def test_a_live_version_failing_its_gate_is_rolled_back_to_the_one_before(coordinator):
    job = create_job(
        coordinator,
        evaluation={"fraction": 1.0, "min_reports": 2, "max_reports": 2},
        promotion={"auto": True, "min_mean_accuracy": 0.99},  # no real model reaches it
    )
    job_id = job["id"]
    promote = coordinator.admin.post(
        f"/v1/admin/jobs/{job_id}/versions/0/promote", json={"to": "live"}
    )
    assert promote.status_code == 200, promote.text

    run_devices(coordinator, devices=3, tasks=1)

    registry = coordinator.admin.get(f"/v1/admin/jobs/{job_id}/registry").json()
    assert registry["versions"][0]["stage"] == "retired"
    assert registry["live"] is None  # nothing was live before version 0
    assert registry["history"][-1]["actor"] == "gate"
    assert "mean accuracy" in registry["history"][-1]["reason"]


def test_bad_reports_are_refused_with_a_reason_never_a_500(coordinator):
    create_job(coordinator, evaluation={"fraction": 1.0, "min_reports": 1, "max_reports": 5})
    client = CoordinatorClient(coordinator.url)
    client.register(runtime="evaluation-test")
    task = client.check_in(EligibilityFacts(num_examples=50))
    assert task.kind == "evaluate"
    url = f"/v1/leases/{task.lease_id}/evaluation"
    headers = {"Authorization": f"Bearer {client.token}"}
    good = {"global_version": 0, "loss": 0.5, "accuracy": 0.5, "num_examples": 5}

    with CoordinatorClient(coordinator.url)._http as http:
        answers = [
            http.post(url, json={**good, **bad}, headers=headers)
            for bad in (
                {"num_examples": -1},
                {"accuracy": 2.0},
                {"global_version": 3},
                {"surprise": 1},
            )
        ]
        unknown = http.post("/v1/leases/nope/evaluation", json=good, headers=headers)
        nan = http.post(
            url,
            content=b'{"global_version": 0, "loss": NaN, "accuracy": 0.5, "num_examples": 5}',
            headers={**headers, "Content-Type": "application/json"},
        )

    assert [a.status_code for a in answers] == [422, 422, 409, 422]  # the schema bounds accuracy
    assert answers[2].json()["error"] == "wrong_base_version"
    assert unknown.status_code == 404 and nan.status_code in (400, 422)
