"""Poisoning end to end: malicious simulated devices against the real coordinator's defences.

One seed, the same devices, data and timing in every run; only a tenth of the devices send
tampered updates, and only the job's defences differ. The runs are the smallest that show
the effect: 50 devices of 40 IID digits, 12 synchronous rounds of 10 reports.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from simulator.config import SimulationConfig
from simulator.report import summary
from simulator.run import Outcome, simulate


def poisoning_run(tmp_path, plans_dir, name: str, **changes: Any) -> Outcome:
    aggregation = {"over_selection": 1.0, "weighting": "uniform", **changes.pop("aggregation", {})}
    fields = {
        "devices": 50,
        "hours": 24.0,  # a bound: the run ends with the job's last version
        "mode": "sync",
        "cohort": 10,
        "rounds": 12,
        "model": "mnist_mlp",
        "dataset": "mnist",
        "seed": 5,
        "backend": "local",
        "plans_dir": plans_dir,
        "out": tmp_path / name,
        "progress": False,
        "eval_every_minutes": 600,
        "fairness_devices": 10,
        "population": {"diurnal": False, "dropout": 0.0, "crash_after_upload": 0.0},
        "partition": {"scheme": "iid", "sizes": "equal", "mean_examples": 40},
        "job": {"aggregation": aggregation, "task": {"local_epochs": 1, "heartbeat_seconds": None}},
        **changes,
    }
    return simulate(SimulationConfig.model_validate(fields))


def accuracy(outcome: Outcome) -> float:
    return float(outcome.rows[-1]["accuracy"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory, plans_dir) -> Outcome:
    return poisoning_run(tmp_path_factory.mktemp("clean"), plans_dir, "clean")


def norm_bounding(clean: Outcome) -> dict[str, Any]:
    """Clipping at the clean run's mean update norm, with adaptive zeroing on top.

    Zeroing's q̂ starts at C, without TFF's +1 (sized for norms of order 1; these are ~0.25).
    """
    versions = [v for v in clean.history["versions"] if v["version"] > 0]
    clip_norm = sum(v["update_norm_mean"] for v in versions) / len(versions)
    zeroing = {"initial_estimate": clip_norm, "increment": 0.0}
    return {"max_update_norm": clip_norm, "norm_policy": "clip", "zeroing": zeroing}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, plans_dir, clean) -> dict[str, Outcome]:
    """A tenth of the devices scale (×10) or flip their updates; the job bounds norms."""
    out = tmp_path_factory.mktemp("bounded")
    return {
        kind: poisoning_run(
            out,
            plans_dir,
            kind,
            attack={"kind": kind, "fraction": 0.1},
            aggregation=norm_bounding(clean),
        )
        for kind in ("scale", "sign_flip")
    }


@pytest.mark.parametrize("kind", ["scale", "sign_flip"])
def test_norm_bounding_keeps_accuracy_within_two_points_of_the_clean_run(clean, bounded, kind):
    defended = bounded[kind]

    assert len(defended.adversary.malicious) == 5
    assert defended.rows[-1]["version"] == clean.rows[-1]["version"] == 12
    assert abs(accuracy(defended) - accuracy(clean)) <= 0.02


def test_the_scaled_updates_reach_the_coordinator_and_are_folded_within_the_bound(clean, bounded):
    bound = norm_bounding(clean)["max_update_norm"]
    defended = bounded["scale"]

    with sqlite3.connect(defended.config.out / "coordinator.db") as db:
        scaled = db.execute("SELECT clipped FROM updates WHERE norm > ?", (5 * bound,)).fetchall()
    assert scaled and all(clipped for (clipped,) in scaled)  # each ×10 update met C
    folded = [v["update_norm_mean"] for v in defended.history["versions"] if v["version"] > 0]
    assert max(folded) <= bound * (1 + 1e-6)


def test_a_backdoor_run_reports_main_task_accuracy_and_backdoor_success(tmp_path, plans_dir):
    run = poisoning_run(
        tmp_path,
        plans_dir,
        "backdoor",
        rounds=3,
        attack={"kind": "backdoor", "fraction": 0.1, "boost": 10.0},
    )

    attack = summary(run)["attack"]
    assert attack["kind"] == "backdoor" and attack["malicious_devices"] == 5
    assert attack["main_task_accuracy"] == run.rows[-1]["accuracy"]
    assert 0.0 <= attack["backdoor_success"] <= 1.0
    assert attack["backdoor_success"] == run.rows[-1]["backdoor_success"]
