"""The privacy audit: its statistics against independent implementations, its canaries, its run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from scipy import stats
from sklearn.metrics import roc_auc_score

from device_sdk.trainer import TrainResult
from simulator.audit import AuditPlan
from simulator.config import AuditConfig, load
from simulator.estimators import (
    EPSILON_CAP,
    auc,
    auc_interval,
    canary_epsilon,
    cosines,
    gaussian_pair_epsilon,
    hockey_stick,
    losses,
    membership,
)


def _pld_epsilon(separation: float, delta: float) -> float:
    """dp-accounting's ε of N(separation, 1) vs N(0, 1): a Gaussian mechanism of σ 1/separation."""
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=1.0 / separation, sensitivity=1.0, value_discretization_interval=1e-4
    )
    return float(pld.get_epsilon_for_delta(delta))


@pytest.mark.parametrize("seed", range(5))
def test_auc_rank_statistic_equals_sklearns_roc_auc_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    members = rng.integers(0, 20, size=300).astype(float)  # integers: many ties
    others = rng.integers(2, 22, size=200).astype(float)
    labels = np.r_[np.ones(members.size), np.zeros(others.size)]

    ours = auc(members, others)

    assert ours == pytest.approx(roc_auc_score(labels, np.r_[members, others]), abs=1e-12)


def test_auc_of_identical_groups_is_one_half_and_of_separated_groups_one() -> None:
    assert auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5
    assert auc([5.0, 6.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [5.0, 6.0]) == 0.0


def test_auc_without_non_members_is_refused() -> None:
    with pytest.raises(ValueError, match="both groups"):
        auc([1.0], [])


def test_bootstrap_interval_covers_the_auc_and_shrinks_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = auc_interval(rng.normal(0.5, 1, 50), rng.normal(0, 1, 50), rng=rng, resamples=300)
    large = auc_interval(rng.normal(0.5, 1, 2000), rng.normal(0, 1, 2000), rng=rng, resamples=300)

    assert small["low"] <= small["auc"] <= small["high"]
    assert large["low"] <= large["auc"] <= large["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 3
    # the AUC of N(0.5, 1) over N(0, 1) is Φ(0.5/√2) = 0.638
    assert large["low"] < stats.norm.cdf(0.5 / math.sqrt(2)) < large["high"]


def test_losses_are_the_cross_entropy_of_the_true_class() -> None:
    probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=np.float32)

    result = losses(probabilities, [1, 2])

    np.testing.assert_allclose(result, [-math.log(0.25), -math.log(0.8)], rtol=1e-6)


def test_membership_scores_lower_loss_as_member_per_example_and_per_device() -> None:
    rng = np.random.default_rng(2)
    members = [rng.exponential(0.2, size=20) for _ in range(30)]
    others = [rng.exponential(0.6, size=20) for _ in range(30)]

    result = membership(members, others, rng=rng, resamples=200)

    assert result["per_example"]["auc"] > 0.7
    assert result["per_device"]["auc"] > result["per_example"]["auc"]  # means pool 20 losses
    assert (result["member_devices"], result["non_member_examples"]) == (30, 600)


def test_hockey_stick_of_equal_variance_gaussians_is_the_gaussian_mechanisms_closed_form() -> None:
    mu, epsilon = 1.5, 1.0
    closed = stats.norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * stats.norm.cdf(
        -epsilon / mu - mu / 2
    )  # Balle & Wang, ICML 2018, Theorem 8

    assert hockey_stick((mu, 1.0), (0.0, 1.0), epsilon) == pytest.approx(closed, rel=1e-9)


@pytest.mark.parametrize(("separation", "delta"), [(0.5, 1e-5), (1.0, 1e-5), (3.0, 1e-6)])
def test_gaussian_pair_epsilon_equals_dp_accountings_gaussian_mechanism(
    separation: float, delta: float
) -> None:
    ours = gaussian_pair_epsilon((separation, 1.0), (0.0, 1.0), delta)

    assert ours == pytest.approx(_pld_epsilon(separation, delta), rel=0.01)


def test_gaussian_pair_epsilon_with_unequal_variances_takes_the_worse_order() -> None:
    wide, narrow = (0.0, 2.0), (0.0, 1.0)

    forward = gaussian_pair_epsilon(wide, narrow, 1e-5)

    # a wider spread alone distinguishes the pair, in the tails, and the ε is symmetric
    assert forward > 0
    assert forward == gaussian_pair_epsilon(narrow, wide, 1e-5)


def test_canary_estimator_on_synthetic_cosines_gives_the_epsilon_of_that_pair() -> None:
    rng = np.random.default_rng(3)
    sigma, separation = 0.003, 2.0  # cosines of 1e5-weight models: σ ≈ 1/√P
    inserted = rng.normal(separation * sigma, sigma, size=20_000)
    held_out = rng.normal(0.0, sigma, size=20_000)

    result = canary_epsilon(inserted, held_out, delta=1e-5)

    assert result["epsilon_lower"] == pytest.approx(_pld_epsilon(separation, 1e-5), rel=0.05)


def test_canary_estimate_interval_covers_the_pairs_epsilon_and_is_wide_with_few_canaries() -> None:
    rng = np.random.default_rng(7)
    truth = _pld_epsilon(2.0, 1e-5)
    inserted, held_out = rng.normal(2.0, 1.0, size=20), rng.normal(0.0, 1.0, size=1000)

    result = canary_epsilon(inserted, held_out, delta=1e-5, rng=rng, resamples=100)

    interval = result["interval"]
    assert interval["low"] <= result["epsilon_lower"] <= interval["high"]
    assert interval["low"] < truth < interval["high"]
    assert interval["high"] - interval["low"] > 1.0  # 20 canaries pin the mean to ±0.45σ
    steady = result["interval_equal_variance"]
    assert steady["low"] < truth < steady["high"]
    assert steady["high"] - steady["low"] < interval["high"] - interval["low"]


def test_equal_variance_reading_is_the_gaussian_mechanisms_epsilon_of_the_mean_gap() -> None:
    rng = np.random.default_rng(8)
    inserted, held_out = rng.normal(1.0, 1.0, size=4000), rng.normal(0.0, 1.0, size=4000)

    result = canary_epsilon(inserted, held_out, delta=1e-5)

    gap = (inserted.mean() - held_out.mean()) / math.sqrt(
        (inserted.var(ddof=1) * 3999 + held_out.var(ddof=1) * 3999) / 7998
    )
    assert result["epsilon_lower_equal_variance"] == pytest.approx(
        _pld_epsilon(gap, 1e-5), rel=0.01
    )


def test_canary_estimator_on_indistinguishable_cosines_is_near_zero() -> None:
    rng = np.random.default_rng(4)

    result = canary_epsilon(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), delta=1e-5)

    assert result["epsilon_lower"] < 0.3


def test_canary_estimator_on_far_apart_cosines_reads_the_cap_flagged() -> None:
    rng = np.random.default_rng(6)

    result = canary_epsilon(rng.normal(80, 1, 50), rng.normal(0, 1, 1000), delta=1e-5)

    assert result["epsilon_lower"] == EPSILON_CAP and result["at_cap"]


def test_a_group_of_identical_cosines_reads_as_a_point_mass_not_an_error() -> None:
    held_out = np.random.default_rng(9).normal(0, 1, 100)

    apart = canary_epsilon([3.0, 3.0], held_out, delta=1e-5)
    same = canary_epsilon([1.0, 1.0], [1.0, 1.0], delta=1e-5)

    assert apart["epsilon_lower"] == EPSILON_CAP
    assert same["epsilon_lower"] == 0.0


def test_canary_estimator_needs_two_cosines_a_group() -> None:
    with pytest.raises(ValueError, match="two cosines"):
        canary_epsilon([0.1], [0.0, 0.1], delta=1e-5)


def _plan(canaries: int = 5, held_out: int = 5, devices: int = 40) -> AuditPlan:
    config = AuditConfig(enabled=True, canaries=canaries, held_out_devices=held_out)
    plan = AuditPlan.draw(config, devices=devices, seed=7, exclude=frozenset({0, 1}))
    assert plan is not None
    return plan


def test_audit_plan_draws_disjoint_held_out_and_canary_devices_avoiding_malicious_ones() -> None:
    plan = _plan()

    assert len(plan.held_out) == 5 and len(set(plan.canaries)) == 5
    assert not plan.held_out & set(plan.canaries)
    assert not {0, 1} & (plan.held_out | set(plan.canaries))
    assert AuditPlan.draw(AuditConfig(), devices=40, seed=7) is None  # off by default


def test_canary_directions_are_unit_norm_fixed_and_nearly_orthogonal() -> None:
    plan = _plan()
    size = 10_000

    rows = np.stack([plan.direction(i, size) for i in plan.directions()[:50]])

    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(plan.direction(3, size), rows[3])
    off_diagonal = (rows @ rows.T)[~np.eye(50, dtype=bool)]
    assert np.abs(off_diagonal).max() < 6 / math.sqrt(size)


def test_canary_directions_are_uniform_on_the_sphere() -> None:
    plan = _plan()
    fixed = np.zeros(3)
    fixed[0] = 1.0

    # On the 2-sphere the first coordinate of a uniform point is uniform on [-1, 1] (Archimedes).
    first = np.array([plan.direction(i, 3) @ fixed for i in range(2000)])

    assert stats.kstest(first, stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.001


def _result(delta: np.ndarray) -> TrainResult:
    return TrainResult(delta=delta, num_examples=10, metrics={"loss": 0.1})


def test_a_canary_device_sends_its_direction_at_the_clip_norm_and_others_their_delta() -> None:
    plan = _plan()
    canary, honest = plan.canaries[2], next(iter(plan.held_out))
    trained = np.full(1000, 0.01, dtype=np.float32)
    x, y = np.zeros((1, 2), np.float32), np.zeros(1, np.int32)

    sent = plan.train(canary, (x, y), lambda *_: _result(trained), clip_norm=0.5)
    kept = plan.train(honest, (x, y), lambda *_: _result(trained), clip_norm=0.5)
    unclipped = plan.train(canary, (x, y), lambda *_: _result(trained), clip_norm=None)

    assert isinstance(sent, TrainResult) and isinstance(unclipped, TrainResult)
    np.testing.assert_allclose(sent.delta, 0.5 * plan.direction(2, 1000), rtol=1e-6)
    assert float(np.linalg.norm(sent.delta.astype(np.float64))) <= 0.5 * (1 + 1e-6)
    assert isinstance(kept, TrainResult) and kept.delta is trained
    assert float(np.linalg.norm(unclipped.delta)) == pytest.approx(plan.config.canary_norm)


def test_cosines_measure_the_canary_in_a_sum_of_noise() -> None:
    plan = _plan()
    size = 20_000
    rng = np.random.default_rng(5)
    model_delta = plan.direction(0, size) + rng.normal(0, 1 / math.sqrt(size), size)

    result = cosines(model_delta, np.stack([plan.direction(i, size) for i in (0, 1)]))

    assert result[0] == pytest.approx(1 / math.sqrt(2), abs=0.02)
    assert abs(result[1]) < 0.05


def test_an_audit_that_takes_half_the_population_is_refused_naming_the_fields() -> None:
    with pytest.raises(ValueError, match=r"audit\.canaries or audit\.held_out_devices"):
        load(None, {"devices": 100, "audit.enabled": True, "audit.held_out_devices": 45})


def test_simulate_with_audit_writes_both_attacks_and_the_bounds_into_the_summary(
    tmp_path: Path, plans_dir: Path
) -> None:
    from simulator.config import SimulationConfig
    from simulator.report import write
    from simulator.run import simulate

    config = SimulationConfig.model_validate(
        {
            "devices": 50,
            "hours": 24.0,  # a bound: the run ends with the job's last version
            "mode": "sync",
            "cohort": 10,
            "rounds": 4,
            "dp_epsilon": 5.0,
            "model": "mnist_mlp",
            "dataset": "mnist",
            "backend": "local",
            "plans_dir": plans_dir,
            "out": tmp_path / "audited",
            "progress": False,
            "eval_every_minutes": 600,
            "fairness_devices": 10,
            "population": {"diurnal": False, "dropout": 0.0, "crash_after_upload": 0.0},
            "partition": {"scheme": "iid", "sizes": "equal", "mean_examples": 20},
            "job": {"aggregation": {"over_selection": 1.0}, "task": {"local_epochs": 1}},
            "audit": {
                "enabled": True,
                "canaries": 6,
                "held_out_devices": 10,
                "held_out_canaries": 50,
                "bootstrap": 50,
            },
        }
    )

    outcome = simulate(config)
    write(outcome, config.out, plots=False)

    audit = json.loads((config.out / "summary.json").read_text())["audit"]
    population = outcome.population
    held_out = sorted(population.gone.nonzero()[0])
    assert len(held_out) == 10 and population.sessions[held_out].sum() == 0
    assert audit["membership"]["non_member_devices"] == 10
    assert audit["membership"]["member_devices"] >= 10
    assert (
        0.0
        <= audit["membership"]["per_device"]["low"]
        <= audit["membership"]["per_device"]["high"]
        <= 1.0
    )
    assert audit["canaries"]["devices"] == 6 and audit["canaries"]["held_out"]["count"] == 50
    privacy = json.loads((config.out / "summary.json").read_text())["privacy"]
    assert audit["epsilon_upper"] == privacy["epsilon_pld"]
    assert audit["delta"] == privacy["delta"]


def test_fedge_simulate_audit_on_too_small_a_population_is_one_line_with_status_2(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "simulate", "--audit", "--devices", "100"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=120,
    )

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "20 canaries + 50 held-out devices take more than half of the 100" in done.stderr


def test_the_reports_audit_section_shows_both_aucs_and_both_epsilons() -> None:
    from simulator.report import audit_section

    interval = {"auc": 0.69, "low": 0.6, "high": 0.78, "level": 0.95}
    audit = {
        "membership": {"per_example": interval, "per_device": interval},
        "epsilon_lower": 1.24,
        "epsilon_upper": 4.99,
        "delta": 1e-5,
    }

    section = audit_section(audit)

    assert section.startswith("<h2>Privacy audit</h2>")
    assert "per device: 0.690 [0.600, 0.780]" in section
    assert "empirical lower 1.240 (canaries), accountant 4.990" in section
    assert audit_section(None) == ""
