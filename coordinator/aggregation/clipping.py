"""Per-update norm bounds: clip a long update to the bound, or refuse it.

Per-update clipping bounds any one device's influence (DP-FedAvg, McMahan et al., ICLR 2018).
Compose it in front of an aggregator's ``accept`` or ``step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from coordinator.aggregation.accumulator import FloatArray, check_vector
from coordinator.aggregation.errors import NormTooLargeError
from coordinator.aggregation.norms import l2_norm

NormPolicy = Literal["clip", "reject"]


def clip_by_norm(delta: FloatArray, max_norm: float) -> tuple[FloatArray, bool]:
    """Scale ``delta`` down to L2 norm ``max_norm`` if it is longer; say whether it was.

    A delta within bounds is returned as is.
    """
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be finite and > 0, got {max_norm}")
    check_vector(delta, num_params=int(np.size(delta)))
    norm = l2_norm(delta)
    if norm <= max_norm:
        return delta, False
    return (delta.astype(np.float64) * (max_norm / norm)).astype(np.float32), True


@dataclass(frozen=True, kw_only=True)
class NormBound:
    """A job's bound on an update's norm and what happens past it: ``clip`` or ``reject``."""

    max_norm: float
    policy: NormPolicy = "reject"

    def __post_init__(self) -> None:
        if self.policy not in ("clip", "reject"):
            raise ValueError(f"policy must be 'clip' or 'reject', got {self.policy!r}")

    def apply(self, delta: FloatArray, norm: float) -> tuple[FloatArray, bool]:
        """``delta`` (of norm ``norm``) within the bound, and whether it was clipped to it.

        Under ``reject`` an update past the bound raises :class:`NormTooLargeError`.
        """
        if not norm > self.max_norm:
            return delta, False
        if self.policy == "reject":
            raise NormTooLargeError(norm, self.max_norm)
        return clip_by_norm(delta, self.max_norm)
