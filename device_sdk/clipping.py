"""Clipping a weight delta to an L2 norm on the device, before it is uploaded (numpy only).

DP-FedAvg (McMahan et al., ICLR 2018) bounds each device's influence on a version by clipping
its update to norm C on the device; the coordinator re-checks the norm and refuses anything
above ``C · (1 + 1e-6)``. The norm and the scale are computed in float64 and the result is
rounded to float32, so a clipped delta may exceed C by float32 rounding only (a relative
2⁻²⁴ per coordinate, far inside the coordinator's tolerance).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def clip_to_norm(delta: FloatArray, clip_norm: float) -> tuple[FloatArray, float]:
    """``delta`` scaled down to L2 norm ``clip_norm`` if it is longer, and its original norm.

    A delta whose norm is at most ``clip_norm`` is returned unchanged (the same array). The
    original norm is what adaptive clipping (Andrew et al., NeurIPS 2021) counts against C.
    Raises ``ValueError`` for a ``clip_norm`` that is not finite and > 0, or a delta that is not
    a finite 1-D float32 vector.
    """
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be finite and > 0, got {clip_norm}")
    if not isinstance(delta, np.ndarray) or delta.dtype != np.float32 or delta.ndim != 1:
        raise ValueError("delta must be a 1-D float32 numpy array")
    wide = delta.astype(np.float64)
    norm = float(np.sqrt(np.dot(wide, wide)))
    if not math.isfinite(norm):
        raise ValueError("delta has non-finite values or a norm that overflows float64")
    if norm <= clip_norm:
        return delta, norm
    return (wide * (clip_norm / norm)).astype(np.float32), norm
