"""The rollout scenario end to end: a poisoned version reaches canary and is rolled back."""

from pathlib import Path

import pytest

from simulator.config import load
from simulator.report import rollout_section, summary
from simulator.run import simulate

SCENARIO = Path(__file__).parents[2] / "experiments" / "rollout" / "poisoned.toml"


@pytest.fixture(scope="module")
def figures(tmp_path_factory, plans_dir):
    out = tmp_path_factory.mktemp("rollout")
    config = load(SCENARIO, {"plans_dir": str(plans_dir), "out": str(out), "progress": False})
    return summary(simulate(config))


@pytest.mark.slow
def test_simulated_devices_evaluate_versions_and_report_their_metrics(figures):
    assert figures["evaluations"] > 0
    assert 0 < figures["evaluations_reported"] <= figures["evaluations"]
    evaluated = figures["registry"]["versions"]
    assert evaluated and all(v["reports"] >= 1 for v in evaluated)
    assert all(0.0 <= v["central_accuracy"] <= 1.0 for v in evaluated)


@pytest.mark.slow
def test_the_poisoned_version_goes_out_as_a_canary_and_is_rolled_back_by_the_gates(figures):
    poisoned = 6
    moves = [(m["version"], m["from"], m["to"], m["actor"]) for m in figures["registry"]["moves"]]

    assert (poisoned, "candidate", "canary", "admin") in moves
    assert (poisoned, "canary", "retired", "gate") in moves
    assert poisoned in figures["rolled_back"]
    assert figures["updates_poisoned"] > 0
    bad = next(v for v in figures["registry"]["versions"] if v["version"] == poisoned)
    assert bad["central_accuracy"] < 0.3  # the oracle agrees: it was bad


@pytest.mark.slow
def test_a_good_version_is_widened_step_by_step_and_goes_live(figures):
    moves = figures["registry"]["moves"]
    live = figures["registry"]["live"]

    assert live is not None and live != 6
    reasons = [m["reason"] for m in moves if m["version"] == live]
    assert any(r.startswith("widened to 50%") for r in reasons)
    assert any(r.startswith("rollout complete") for r in reasons)


@pytest.mark.slow
def test_the_report_shows_the_stages_over_time(figures):
    section = rollout_section(figures)

    assert "Stages over time" in section and "canary → retired" in section
