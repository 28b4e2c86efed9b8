"""PrivacyConfig: a DP label without noise cannot be built, and every refusal names its field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.privacy import PrivacyConfig, check_satisfiable
from tests.privacy.configs import dp_config

SAMPLED = {"model": "sampled", "population": 10_000, "sampling_rate": 0.01}
ADAPTIVE = {"kind": "adaptive", "initial_clip_norm": 0.1, "clip_count_stddev": 5.0}


def test_off_is_the_default_and_carries_nothing() -> None:
    assert PrivacyConfig().mechanism == "off"


def test_a_valid_gaussian_config_keeps_its_noise_multiplier() -> None:
    config = dp_config()

    assert config.resolved_noise_multiplier == 1.0
    assert config.sum_noise_multiplier == 1.0  # fixed clipping spends all of z on the sum


def test_adaptive_clipping_leaves_the_sum_less_than_z_and_the_count_the_rest() -> None:
    config = dp_config(clipping=ADAPTIVE)

    z_sum, sigma_b = config.sum_noise_multiplier, 5.0
    # One Gaussian of multiplier z is charged for the sum and the count released together.
    assert (z_sum**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(1.0)
    assert z_sum > 1.0


BAD_INPUTS: list[tuple[str, dict[str, Any], str]] = [
    ("zero noise while labelled DP", {"noise_multiplier": 0.0}, "noise_multiplier"),
    ("negative noise", {"noise_multiplier": -1.0}, "noise_multiplier"),
    ("no noise and no target", {"noise_multiplier": None}, "noise_multiplier / target_epsilon"),
    ("both noise and target", {"target_epsilon": 2.0, "planned_versions": 10}, "target_epsilon"),
    (
        "target without planned versions",
        {"noise_multiplier": None, "target_epsilon": 2.0},
        "planned_versions",
    ),
    (
        "non-positive target",
        {"noise_multiplier": None, "target_epsilon": 0.0, "planned_versions": 10},
        "target_epsilon",
    ),
    (
        "target above the budget",
        {"noise_multiplier": None, "target_epsilon": 9.0, "planned_versions": 10},
        "target_epsilon",
    ),
    ("delta of 1/population", {"delta": 1e-4}, "delta"),
    ("delta above 1/population", {"delta": 0.5}, "delta"),
    ("zero delta", {"delta": 0.0}, "delta"),
    ("no delta", {"delta": None}, "delta"),
    ("zero budget", {"epsilon_max": 0.0}, "epsilon_max"),
    ("negative budget", {"epsilon_max": -1.0}, "epsilon_max"),
    ("no budget", {"epsilon_max": None}, "epsilon_max"),
    ("clipping off in DP mode", {"clipping": None}, "clipping"),
    ("zero clip norm", {"clipping": {"kind": "fixed", "clip_norm": 0.0}}, "clip_norm"),
    ("infinite clip norm", {"clipping": {"kind": "fixed", "clip_norm": float("inf")}}, "clip_norm"),
    ("no participation model", {"participation": None}, "participation"),
    (
        "rate and cohort both",
        {"participation": SAMPLED | {"cohort_size": 100}},
        "sampling_rate / cohort_size",
    ),
    (
        "cohort above the population",
        {"participation": {"model": "sampled", "population": 10, "cohort_size": 11}},
        "cohort_size",
    ),
    ("sampling rate above 1", {"participation": SAMPLED | {"sampling_rate": 1.5}}, "sampling_rate"),
    ("empty population", {"participation": SAMPLED | {"population": 0}}, "population"),
    (
        "zero window",
        {"participation": {"model": "capped", "population": 100, "window": 0}},
        "window",
    ),
    (
        "count noise that leaves nothing for the sum",
        {"clipping": ADAPTIVE | {"clip_count_stddev": 0.5}},
        "clip_count_stddev",
    ),
    ("target quantile of 1", {"clipping": ADAPTIVE | {"target_quantile": 1.0}}, "target_quantile"),
    ("a boolean as the noise multiplier", {"noise_multiplier": True}, "noise_multiplier"),
    ("an unknown field", {"noise_multplier": 1.0}, "noise_multplier"),
]


@pytest.mark.parametrize(("why", "overrides", "field"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_a_bad_input_is_refused_naming_its_field(
    why: str, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        dp_config(**overrides)

    assert field in str(refused.value), f"{why}: the refusal does not name {field!r}"


@pytest.mark.parametrize("field", ["noise_multiplier", "delta", "clipping", "participation"])
def test_dp_fields_without_the_mechanism_are_refused(field: str) -> None:
    value = {"participation": SAMPLED, "clipping": {"kind": "fixed", "clip_norm": 1.0}}.get(
        field, 1e-6
    )

    with pytest.raises(ValidationError, match=field):
        PrivacyConfig.model_validate({"mechanism": "off", field: value})


def test_a_window_the_population_cannot_fill_is_refused() -> None:
    config = dp_config(participation={"model": "capped", "population": 1_000, "window": 20})

    check_satisfiable(config, updates_per_version=50)  # 50 × 20 = 1,000 distinct devices: fits
    with pytest.raises(ValueError, match=r"participation\.window"):
        check_satisfiable(config, updates_per_version=51)


def test_a_sampling_rate_below_the_updates_a_version_needs_is_refused() -> None:
    config = dp_config()  # q·N = 100

    check_satisfiable(config, updates_per_version=100)
    with pytest.raises(ValueError, match=r"participation\.sampling_rate"):
        check_satisfiable(config, updates_per_version=101)


def test_an_uncalibrated_config_has_no_noise_multiplier_yet() -> None:
    config = dp_config(noise_multiplier=None, target_epsilon=2.0, planned_versions=10)

    with pytest.raises(ValueError, match="calibrate"):
        _ = config.resolved_noise_multiplier
