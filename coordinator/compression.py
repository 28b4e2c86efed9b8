"""Which uplink codec a lease gets: the least lossy allowed one whose upload fits the budget.

Pure (``fedge.codecs`` and ``fedge.wire`` only): leasing passes the job's allowed codecs and
budget and the device's measured uplink rate, and stores the name it gets on the lease.

"Least lossy" is ranked by each codec's relative error E‖x̂ − x‖² / ‖x‖² on one update, a proxy
from docs/compression.md's bounds: 0 for float32, 2⁻²² for fp16 (|error| ≤ 2⁻¹¹|x|),
3 / (2^b − 1)² for b-bit rotated quantization (rot1's measured ≈ 3‖x‖², the step's square
falling as (2^b − 1)²; fix{b} ranks with rot{b}), π/2 − 1 for eden1 (DRIVE's), and
(1/p − 1) + V/p for random-k keeping p of the coordinates before value codec V. The rank only
orders a job's allowed list; ties go to the larger upload, then to the name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedge.codecs import Codec, Eden, FixedRange, Float16, Float32, Rotated, parse_codec
from fedge.codecs.sampling import PPM
from fedge.wire import update_size

# rot1's error on a 4,096-value delta, measured in docs/compression.md: ≈ 3‖x‖².
ROT1_RELATIVE_ERROR = 3.0
FP16_RELATIVE_ERROR = 2.0**-22
EDEN_RELATIVE_ERROR = math.pi / 2 - 1


def relative_error(codec: Codec | str) -> float:
    """The proxy E‖x̂ − x‖² / ‖x‖² that ranks codecs from least to most lossy (see above)."""
    chosen = parse_codec(codec) if isinstance(codec, str) else codec
    values = chosen.values
    if isinstance(values, Float32):
        error = 0.0
    elif isinstance(values, Float16):
        error = FP16_RELATIVE_ERROR
    elif isinstance(values, Eden):
        error = EDEN_RELATIVE_ERROR
    elif isinstance(values, Rotated | FixedRange):
        error = ROT1_RELATIVE_ERROR / (2**values.bits - 1) ** 2
    else:  # pragma: no cover - every value codec is named above
        raise TypeError(f"no error proxy for codec {chosen.name}")
    if chosen.sparsity is None:
        return error
    kept = chosen.sparsity.ppm / PPM
    return (1 / kept - 1) + error / kept


def upload_budget(
    *,
    task_bytes: int | None,
    task_seconds: float | None,
    uplink_bytes_per_second: float | None,
) -> float | None:
    """The most bytes a task may upload: the byte budget, or the time budget at the rate.

    The smaller of the two when both apply; None when neither does (no budget, or a time budget
    for a device that measured no rate).
    """
    budgets = []
    if task_bytes is not None:
        budgets.append(float(task_bytes))
    if task_seconds is not None and uplink_bytes_per_second is not None:
        budgets.append(task_seconds * uplink_bytes_per_second)
    return min(budgets) if budgets else None


def choose_codec(
    allowed: Sequence[str],
    *,
    num_params: int,
    task_bytes: int | None = None,
    task_seconds: float | None = None,
    uplink_bytes_per_second: float | None = None,
) -> str:
    """The least lossy codec of ``allowed`` whose upload of ``num_params`` fits the budget.

    When none fits, the smallest upload: a slow device compresses harder instead of dropping
    out. Without a budget (:func:`upload_budget` is None), the least lossy. ``allowed`` must be
    non-empty canonical names (the job config stores them so).
    """
    if not allowed:
        raise ValueError("a job allows at least one codec")
    sizes = {name: update_size(name, num_params) for name in allowed}
    ranked = sorted(allowed, key=lambda name: (relative_error(name), -sizes[name], name))
    budget = upload_budget(
        task_bytes=task_bytes,
        task_seconds=task_seconds,
        uplink_bytes_per_second=uplink_bytes_per_second,
    )
    if budget is None:
        return ranked[0]
    for name in ranked:
        if sizes[name] <= budget:
            return name
    return min(ranked, key=lambda name: (sizes[name], relative_error(name)))
