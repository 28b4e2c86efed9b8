"""Encode and decode cost of each uplink codec on one core, beside float32's encode/decode_vector.

Run: ``python -m benchmarks.codec_cost`` (add ``--repeats N``). For a CNN-size (1.6 M) and an
MLP-size (100 k) update it prints, per codec, the encoded bytes, bits per coordinate, the
median encode time (device side: ``encode_update``) and decode time (coordinator side:
``decode_update`` then ``add_to`` a float64 sum), and both as a ratio to float32's
``encode_vector`` / ``decode_vector`` measured in the same run. Set OMP/OPENBLAS threads to 1
for a one-core figure (numpy's element-wise code is single-threaded anyway).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from fedge.wire import decode_update, decode_vector, encode_update, encode_vector

CODECS = [
    "fp16",
    "rot8",
    "rot4",
    "rot2",
    "rot1",
    "eden1",
    "fix8:range=0.05",
    "randk10",
    "randk10+rot4",
    "randk10+eden1",
]
SIZES = {"CNN 1.6M": 1_600_000, "MLP 100k": 100_000}


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``action`` over ``repeats`` runs, after one warm-up."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(label: str, size: int, repeats: int) -> None:
    """Print one model size's rows."""
    delta = (np.random.default_rng(0).normal(size=size) * 1e-3).astype(np.float32)
    total = np.zeros(size)
    raw = encode_vector(delta)
    base_encode = median_seconds(lambda: encode_vector(delta), repeats)
    base_decode = median_seconds(lambda: np.add(total, decode_vector(raw), out=total), repeats)
    print(
        f"\n{label}: float32 {len(raw):,} B, encode_vector {base_encode * 1e3:.2f} ms, "
        f"decode_vector + add {base_decode * 1e3:.2f} ms"
    )
    print(
        f"{'codec':<18}{'bytes':>12}{'bits/coord':>12}{'x smaller':>10}"
        f"{'encode ms':>11}{'x f32':>8}{'decode ms':>11}{'x f32':>8}"
    )
    for name in CODECS:
        rng = np.random.default_rng(1)
        data = encode_update(delta, name, seed=7, rng=rng)
        encode = median_seconds(lambda: encode_update(delta, name, seed=7, rng=rng), repeats)  # noqa: B023
        decode = median_seconds(lambda: decode_update(data).add_to(total), repeats)  # noqa: B023
        bits = 8 * len(data) / size
        print(
            f"{name:<18}{len(data):>12,}{bits:>12.3f}{len(raw) / len(data):>10.1f}"
            f"{encode * 1e3:>11.1f}{encode / base_encode:>8.0f}"
            f"{decode * 1e3:>11.1f}{decode / base_decode:>8.0f}"
        )


def main() -> None:
    """Print the table for each model size."""
    parser = argparse.ArgumentParser(description="Encode/decode cost of each uplink codec.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for label, size in SIZES.items():
        table(label, size, args.repeats)


if __name__ == "__main__":
    main()
