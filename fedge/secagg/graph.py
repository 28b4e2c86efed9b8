"""The neighbour graph of SecAgg+: a Harary graph H(k, n) on a random ring order from a public seed.

Bell et al. (CCS 2020) replace SecAgg's complete graph with a random graph of degree
k = O(log n); each device masks with and shares its secrets among its k neighbours only, so
a device's work is O(k + m) instead of O(n + m). Here the graph is Harary's: the members are
placed on a ring in an order drawn from the seed, and each is joined to the k/2 nearest on
either side (k-regular, k-connected). The order comes from PCG64's raw 64-bit words under
``SeedSequence(seed)`` — what numpy keeps stable across releases (NEP 19) — so a device and a
coordinator with different numpy draw the same graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedge.secagg.errors import InvalidParameters

I64 = npt.NDArray[np.int64]


def default_degree(members: int) -> int:
    """An even degree ≈ 4·log2 n (40 at n = 1,000, 28 at 100), or n − 1 (complete) when larger."""
    if members < 2:
        raise InvalidParameters(f"a group has at least 2 members, got {members}")
    degree = 2 * math.ceil(2 * math.log2(members))
    return members - 1 if degree >= members - 1 else degree


def default_threshold(degree: int) -> int:
    """⌊k/2⌋ + 1 of the k neighbours: a strict majority, which a lying server needs twice.

    It survives little dropout at k ≈ 40 (see :func:`dropout_threshold`).
    """
    return degree // 2 + 1


def _binomial_below(trials: int, p: float, limit: int) -> float:
    """P(Binomial(trials, p) < limit), summed in logs (no overflow for large k)."""
    if p <= 0.0:
        return 1.0 if limit > 0 else 0.0
    if p >= 1.0:
        return 1.0 if limit > trials else 0.0
    total = 0.0
    for i in range(min(limit, trials + 1)):
        log_term = (
            math.lgamma(trials + 1)
            - math.lgamma(i + 1)
            - math.lgamma(trials - i + 1)
            + i * math.log(p)
            + (trials - i) * math.log1p(-p)
        )
        total += math.exp(log_term)
    return min(total, 1.0)


def dropout_threshold(
    members: int, degree: int, *, dropout: float, abandon_probability: float = 1e-6
) -> int:
    """The largest threshold t that keeps a group alive through ``dropout`` but for a small chance.

    Each device is gone by the end with chance ``dropout``; t is the largest with the expected
    number of survivors with fewer than t surviving neighbours (which abandons the group) at
    most ``abandon_probability`` (a union bound over n).

    At k = 40 and 30 % dropout this is 11 (n = 100) and 10 (n = 1,000); the majority
    ⌊k/2⌋ + 1 = 21 would abandon such groups almost surely. A lower t tolerates fewer
    colluding neighbours (t − 1): docs/secure-aggregation.md tabulates the trade-off.
    """
    if not 0.0 <= dropout < 1.0:
        raise InvalidParameters(f"dropout must be in [0, 1), got {dropout}")
    check_degree(members, degree)
    fits = [
        t
        for t in range(2, degree + 1)
        if members * _binomial_below(degree, 1.0 - dropout, t) <= abandon_probability
    ]
    if not fits:
        raise InvalidParameters(
            f"no threshold of at least 2 keeps groups of {members} with degree {degree} alive "
            f"at {dropout:.0%} dropout; raise the degree"
        )
    return max(fits)


def exposure(members: int, degree: int, threshold: int, *, corrupt: float) -> float:
    """Expected number of devices with ≥ t corrupt neighbours, each device corrupt w.p. ``corrupt``.

    Those are the devices whose input t colluders and the server could unmask.
    """
    return members * (1.0 - _binomial_below(degree, corrupt, threshold))


def check_degree(members: int, degree: int) -> None:
    """A Harary degree is even and below n − 1, or exactly n − 1 (the complete graph)."""
    if degree == members - 1 and degree >= 1:
        return
    if not (2 <= degree < members - 1 and degree % 2 == 0):
        raise InvalidParameters(
            f"degree must be even in [2, {members - 2}] or {members - 1} (complete), got {degree}"
        )


def ring_order(count: int, seed: bytes) -> I64:
    """A permutation of range(count) drawn from ``seed`` (stable across numpy releases)."""
    entropy = int.from_bytes(seed, "little")
    keys = np.random.PCG64(np.random.SeedSequence(entropy)).random_raw(count)
    return np.argsort(keys, kind="stable").astype(np.int64)


def neighbour_indices(count: int, degree: int, seed: bytes) -> I64:
    """(count, degree) member indices: row i holds member i's neighbours, ascending."""
    check_degree(count, degree)
    if degree == count - 1:
        everyone = np.arange(count, dtype=np.int64)
        return np.stack([np.delete(everyone, i) for i in range(count)])
    order = ring_order(count, seed)
    position = np.empty(count, dtype=np.int64)
    position[order] = np.arange(count)
    half = np.arange(1, degree // 2 + 1)
    offsets = np.concatenate([-half[::-1], half])
    rows = order[(position[:, None] + offsets[None, :]) % count]
    return np.sort(rows, axis=1)


def neighbours(members: Sequence[int], degree: int, seed: bytes) -> dict[int, tuple[int, ...]]:
    """Each member's neighbours by device id (ids are any ints; the graph is over their order)."""
    rows = neighbour_indices(len(members), degree, seed)
    return {
        device: tuple(members[int(i)] for i in row)
        for device, row in zip(members, rows.tolist(), strict=True)
    }
