"""Shamir secret sharing of raw 32-byte secrets over Z_p, p = 2^31 − 1, vectorised with numpy.

A secret is cut into 16 little-endian limbs of 16 bits, each shared with its own random
polynomial of degree ``threshold − 1`` (Shamir, CACM 1979). Every value stays below p < 2^31,
so a product of two fits in int64 and one numpy expression evaluates all limbs of all secrets
at all points at once: splitting is ``threshold`` Horner steps over an (points × limbs) array,
combining a Lagrange weight vector times a (shares × limbs) array. Nothing loops per byte.

A share is the 16 limbs' values at one point, 64 bytes (uint32 little-endian). With fewer than
``threshold`` shares every secret is equally consistent (each limb is a uniformly random
polynomial's value at 0); :func:`combine` refuses fewer, and a limb that does not fit in 16
bits after interpolation (what wrong or too few shares give, but for a 2^-240 chance) is a
:class:`BadShare`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedge.secagg.errors import BadShare, InvalidParameters, OutOfField, WrongSize

PRIME = (1 << 31) - 1
SECRET_BYTES = 32
LIMB_BITS = 16
LIMBS = SECRET_BYTES * 8 // LIMB_BITS
SHARE_BYTES = LIMBS * 4

I64 = npt.NDArray[np.int64]
RandomBytes = Callable[[int], bytes]


def uniform(count: int, random_bytes: RandomBytes) -> I64:
    """``count`` values uniform on Z_p: 31 random bits each, the one value p redrawn."""
    values = np.frombuffer(random_bytes(4 * count), dtype="<u4").astype(np.int64) & PRIME
    while (redo := np.flatnonzero(values == PRIME)).size:
        values[redo] = np.frombuffer(random_bytes(4 * redo.size), "<u4").astype(np.int64) & PRIME
    return values


def split(
    secrets: Sequence[bytes], points: Sequence[int], threshold: int, random_bytes: RandomBytes
) -> I64:
    """Shares of each 32-byte secret at each point: an int64 array (points, secrets, limbs).

    ``points`` are distinct x-coordinates in [1, p); any ``threshold`` of the shares give the
    secrets back, fewer give nothing about them. ``random_bytes`` must be a CSPRNG
    (``secrets.token_bytes``): the coefficients are the secrecy.
    """
    xs = _points(points)
    if not 1 <= threshold <= xs.size:
        raise InvalidParameters(f"threshold {threshold} must be in [1, {xs.size}] for the points")
    if any(len(secret) != SECRET_BYTES for secret in secrets):
        raise WrongSize(f"a shared secret is {SECRET_BYTES} bytes")
    limbs = np.frombuffer(b"".join(secrets), dtype="<u2").astype(np.int64)
    coefficients = uniform((threshold - 1) * limbs.size, random_bytes)
    coefficients = coefficients.reshape(threshold - 1, limbs.size)
    values = np.zeros((xs.size, limbs.size), dtype=np.int64)
    for coefficient in coefficients[::-1]:  # Horner, highest degree first
        values = (values * xs[:, None] + coefficient) % PRIME
    values = (values * xs[:, None] + limbs) % PRIME
    return values.reshape(xs.size, len(secrets), LIMBS)


def combine(points: Sequence[int], shares: I64, threshold: int) -> list[bytes]:
    """The secrets from shares (points, secrets, limbs) at ``points``: at least ``threshold``.

    The first ``threshold`` shares are interpolated; any further ones must lie on the same
    polynomials, so a wrong share is a :class:`BadShare` instead of a wrong secret.
    """
    xs = _points(points)
    if shares.ndim != 3 or shares.shape[0] != xs.size or shares.shape[2] != LIMBS:
        raise WrongSize(f"shares must be (points, secrets, {LIMBS}), got {shares.shape}")
    if xs.size < threshold:
        raise BadShare(f"{xs.size} shares cannot give a secret shared with threshold {threshold}")
    base, extra = xs[:threshold], xs[threshold:]
    flat = shares.reshape(xs.size, -1)
    weights = lagrange_weights(base, np.zeros(1, dtype=np.int64))[0]
    limbs = _weighted_sum(weights, flat[:threshold])
    if extra.size:
        expected = np.stack(
            [_weighted_sum(w, flat[:threshold]) for w in lagrange_weights(base, extra)]
        )
        if not np.array_equal(expected, flat[threshold:]):
            raise BadShare("the shares do not lie on one polynomial: at least one is wrong")
    if np.any(limbs >> LIMB_BITS):
        raise BadShare("the shares interpolate to no secret: too few, or wrong")
    raw = limbs.astype("<u2").reshape(shares.shape[1], LIMBS)
    return [row.tobytes() for row in raw]


def lagrange_weights(nodes: I64, at: I64) -> I64:
    """Weights w[e, j]: f(at[e]) = Σ_j w[e, j]·f(nodes[j]) for every f of degree < len(nodes)."""
    t = nodes.size
    differences = (nodes[None, :] - nodes[:, None]) % PRIME  # [j, m] = x_m − x_j
    np.fill_diagonal(differences, 1)
    numerators = (at[:, None, None] - nodes[None, None, :]) % PRIME  # [e, j, m] = a_e − x_m
    numerators = np.broadcast_to(numerators, (at.size, t, t)).copy()
    numerators[:, np.arange(t), np.arange(t)] = 1
    # w = Π_{m≠j} (a − x_m) / (x_j − x_m) = Π (a − x_m) / Π −(x_m − x_j)
    denominators = _product(differences) * (1 if t % 2 else PRIME - 1) % PRIME  # (−1)^(t−1)
    return _product(numerators) * _inverse(denominators)[None, :] % PRIME


def shares_to_bytes(shares: I64) -> list[bytes]:
    """Each (limbs,) share as its 64 bytes (uint32 little-endian)."""
    return [row.tobytes() for row in shares.reshape(-1, LIMBS).astype("<u4")]


def share_from_bytes(data: bytes) -> I64:
    """One share from its 64 bytes; a wrong length or a limb not below p is refused."""
    if len(data) != SHARE_BYTES:
        raise WrongSize(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    limbs = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if np.any(limbs >= PRIME):
        raise OutOfField(f"a share limb must be below the prime {PRIME}")
    return limbs


def _points(points: Sequence[int]) -> I64:
    xs = np.asarray(points, dtype=np.int64)
    if xs.ndim != 1 or np.any(xs <= 0) or np.any(xs >= PRIME) or np.unique(xs).size != xs.size:
        raise InvalidParameters(f"share points must be distinct and in [1, {PRIME})")
    return xs


def _weighted_sum(weights: I64, values: I64) -> I64:
    # Each product < 2^62; reduce before summing so at most ``t`` values < p are added.
    total: I64 = ((weights[:, None] * values) % PRIME).sum(axis=0) % PRIME
    return total


def _product(values: I64) -> I64:
    """Π over the last axis mod p, one numpy multiply per column."""
    result = np.ones(values.shape[:-1], dtype=np.int64)
    for column in np.moveaxis(values, -1, 0):
        result = result * column % PRIME
    return result


def _inverse(values: I64) -> I64:
    """a^(p−2) mod p (Fermat), square-and-multiply over the whole vector."""
    result = np.ones_like(values)
    base = values % PRIME
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % PRIME
        base = base * base % PRIME
        exponent >>= 1
    return result
