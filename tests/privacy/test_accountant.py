"""The accountant reports what dp-accounting says for the event the mechanism really is."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import pld, rdp

from coordinator.privacy import (
    PrivacyAccountant,
    PrivacyLedger,
    calibrate,
    planned_ledger,
    version_event,
)
from tests.privacy.configs import dp_config


def _random_cases(count: int, seed: int) -> list[tuple[float, float, int, float]]:
    """(q, z, T, δ) drawn log-uniformly where ε stays moderate (PLD is slow at large ε)."""
    rng = np.random.default_rng(seed)
    return [
        (
            float(10 ** rng.uniform(-3, math.log10(0.05))),
            float(rng.uniform(0.8, 3.0)),
            int(rng.integers(10, 400)),
            float(10 ** rng.uniform(-7, -5)),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(("q", "z", "T", "delta"), _random_cases(20, seed=15))
def test_poisson_epsilon_equals_a_direct_dp_accounting_call(
    q: float, z: float, T: int, delta: float
) -> None:
    config = dp_config(
        participation={"model": "sampled", "population": 100_000, "sampling_rate": q},
        noise_multiplier=z,
        delta=delta,
    )
    ledger = PrivacyLedger()
    accountant = PrivacyAccountant(config)
    for _ in range(T):
        ledger = accountant.record_version(ledger)

    report = accountant.report(ledger)

    direct = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), T)
    assert report.method == "pld"
    assert report.epsilon == pytest.approx(
        pld.PLDAccountant().compose(direct).get_epsilon(delta), rel=0.01
    )
    assert report.epsilon_rdp == pytest.approx(
        rdp.RdpAccountant().compose(direct).get_epsilon(delta), rel=0.01
    )
    assert report.assumptions.sampling_rate == q
    assert report.assumptions.versions == T
    assert report.assumptions.participation == "poisson"


def test_the_measured_table_in_the_notes_is_reproduced() -> None:
    # The notes measured q = 1e-3, T = 2000, δ = 1e-6 at N = 1e6; δ = 1/N is refused here
    # (releasing one device outright would pass), and Poisson ε depends on q, not on N.
    config = dp_config(
        participation={"model": "sampled", "population": 999_999, "sampling_rate": 1e-3}
    )

    report = PrivacyAccountant(config).report(planned_ledger(config, 2000))

    assert report.epsilon_pld == pytest.approx(0.252, abs=0.001)
    assert report.epsilon_rdp == pytest.approx(0.882, abs=0.001)


def test_a_fixed_cohort_is_accounted_by_rdp_under_replace_one_at_half_the_multiplier() -> None:
    # Replacing one device's update moves the sum by up to 2C: noise zC is z/2 sensitivities.
    config = dp_config(
        participation={"model": "sampled", "population": 10_000, "cohort_size": 100},
        noise_multiplier=2.0,
    )

    report = PrivacyAccountant(config).report(planned_ledger(config, 50))

    direct = dpa.SelfComposedDpEvent(
        dpa.SampledWithoutReplacementDpEvent(10_000, 100, dpa.GaussianDpEvent(1.0)), 50
    )
    replace_one = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    assert report.method == "rdp"
    assert report.epsilon_pld is None
    assert report.epsilon == pytest.approx(replace_one.compose(direct).get_epsilon(1e-6), rel=0.01)
    assert report.assumptions.event_noise_multiplier == 1.0
    assert report.assumptions.neighboring_relation == "replace_one"


@pytest.mark.parametrize(("window", "versions", "windows"), [(1, 7, 7), (5, 1, 1), (5, 11, 3)])
def test_capped_participation_composes_one_gaussian_per_window_opened(
    window: int, versions: int, windows: int
) -> None:
    config = dp_config(
        participation={"model": "capped", "population": 10_000, "window": window},
        noise_multiplier=4.0,
    )
    accountant = PrivacyAccountant(config)
    ledger = PrivacyLedger()
    for _ in range(versions):
        ledger = accountant.record_version(ledger)

    report = accountant.report(ledger)

    direct = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(4.0), windows)
    assert report.assumptions.compositions == windows
    assert report.epsilon == pytest.approx(
        pld.PLDAccountant().compose(direct).get_epsilon(1e-6), rel=0.01
    )


def test_capped_accounting_is_never_above_dp_ftrl_tree_accounting_of_the_same_window() -> None:
    # The tree event accounts tree-structured noise, each device once per tree of W steps;
    # independent noise per version is the cheaper case of the same cap.
    config = dp_config(
        participation={"model": "capped", "population": 10_000, "window": 16}, noise_multiplier=3.0
    )

    report = PrivacyAccountant(config).report(planned_ledger(config, 64))

    tree = dpa.SelfComposedDpEvent(dpa.SingleEpochTreeAggregationDpEvent(3.0, 16), 4)
    special = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_SPECIAL)
    assert report.epsilon_rdp <= special.compose(tree).get_epsilon(1e-6)


@pytest.mark.parametrize(
    "participation",
    [
        {"model": "sampled", "population": 10_000, "sampling_rate": 0.02},
        {"model": "sampled", "population": 10_000, "cohort_size": 50},
        {"model": "capped", "population": 10_000, "window": 3},
    ],
    ids=["poisson", "fixed_size", "capped"],
)
def test_a_ledger_recorded_version_by_version_equals_the_planned_one(
    participation: dict[str, object],
) -> None:
    config = dp_config(participation=participation)
    accountant = PrivacyAccountant(config)
    ledger = PrivacyLedger()

    for _ in range(10):
        ledger = accountant.record_version(ledger)

    assert ledger == planned_ledger(config, 10)


def test_a_ledger_rebuilt_from_its_json_gives_the_same_epsilon() -> None:
    config = dp_config()
    accountant = PrivacyAccountant(config)
    ledger = planned_ledger(config, 40)

    rebuilt = PrivacyLedger.from_json(ledger.to_json())

    assert rebuilt == ledger
    assert accountant.report(rebuilt) == accountant.report(ledger)


def test_a_restart_midway_continues_the_same_ledger() -> None:
    config = dp_config(participation={"model": "capped", "population": 10_000, "window": 4})
    accountant = PrivacyAccountant(config)
    stored = PrivacyLedger()
    for _ in range(6):
        stored = accountant.record_version(stored)

    resumed = PrivacyLedger.from_json(stored.to_json())  # the stored text after a SIGKILL
    for _ in range(5):
        resumed = accountant.record_version(resumed)

    assert resumed == planned_ledger(config, 11)


def test_the_ledger_refuses_json_that_is_not_a_ledger() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        PrivacyLedger.from_json(
            '{"format": 1, "versions": 1, "events": [{"count": 1, "event": {"type": "os"}}]}'
        )
    with pytest.raises(ValueError, match="not a privacy ledger"):
        PrivacyLedger.from_json("[]")


def test_no_version_yet_is_no_epsilon() -> None:
    report = PrivacyAccountant(dp_config()).report(PrivacyLedger())

    assert report.epsilon == 0.0


def test_the_report_is_plain_data_with_its_assumptions() -> None:
    report = PrivacyAccountant(dp_config()).report(planned_ledger(dp_config(), 3))

    fields = report.as_dict()

    assert fields["method"] == "pld"
    assert fields["assumptions"]["population"] == 10_000  # type: ignore[index]
    assert str(fields["assumptions"]["library"]).startswith("dp-accounting ")  # type: ignore[index]


def test_a_version_is_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="version"):
        version_event(dp_config(), 0)


def test_the_budget_allows_exactly_the_versions_whose_epsilon_stays_within_it() -> None:
    config = dp_config(epsilon_max=1.0)  # q = 0.01, z = 1: ε(100) ≈ 0.95
    accountant = PrivacyAccountant(config)

    allowed = accountant.versions_within_budget(400)

    assert 0 < allowed < 400
    assert accountant.epsilon_after(allowed) <= 1.0 < accountant.epsilon_after(allowed + 1)


@pytest.mark.parametrize(
    "participation",
    [
        {"model": "sampled", "population": 100_000, "sampling_rate": 0.01},
        {"model": "capped", "population": 100_000, "window": 10},
    ],
    ids=["poisson", "capped"],
)
def test_calibrated_noise_meets_the_target_epsilon_and_is_close_to_it(
    participation: dict[str, object],
) -> None:
    request = dp_config(
        participation=participation,
        noise_multiplier=None,
        target_epsilon=2.0,
        planned_versions=100,
    )

    config = calibrate(request)

    epsilon = PrivacyAccountant(config).epsilon_after(100)
    assert config.target_epsilon is None
    assert 2.0 * 0.99 <= epsilon <= 2.0
