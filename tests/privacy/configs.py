"""Builders of privacy configs shared by the privacy tests."""

from __future__ import annotations

from typing import Any

from coordinator.privacy import PrivacyConfig


def dp_config(**overrides: Any) -> PrivacyConfig:
    """A valid Gaussian config (Poisson q = 0.01 of 10,000, z = 1, C = 1), fields overridden."""
    fields: dict[str, Any] = {
        "mechanism": "gaussian",
        "participation": {"model": "sampled", "population": 10_000, "sampling_rate": 0.01},
        "noise_multiplier": 1.0,
        "delta": 1e-6,
        "epsilon_max": 8.0,
        "clipping": {"kind": "fixed", "clip_norm": 1.0},
    }
    fields.update(overrides)
    return PrivacyConfig.model_validate(fields)
