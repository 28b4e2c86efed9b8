"""The privacy audit's statistics: rank AUC, bootstrap intervals, the ε of a Gaussian pair.

Pure numpy and scipy, for :mod:`simulator.audit`: the loss-threshold attack's AUC (Yeom et
al., CSF 2018) and the one-shot ε estimate from canary cosines (Andrew et al., ICLR 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


def auc(members: npt.ArrayLike, others: npt.ArrayLike) -> float:
    """P(a member's score > a non-member's), ties counted half: the ROC AUC as a rank statistic.

    Higher scores mean "member" (here −loss). Mann–Whitney U / (n₁·n₀) with average ranks.
    """
    pos, neg = np.asarray(members, dtype=np.float64), np.asarray(others, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"an AUC needs both groups, got {pos.size} members and {neg.size} others")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = float(ranks[: pos.size].sum()) - pos.size * (pos.size + 1) / 2.0
    return u / (pos.size * neg.size)


def auc_interval(
    members: npt.ArrayLike,
    others: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    resamples: int = 1000,
    level: float = 0.95,
) -> dict[str, float]:
    """The AUC and its percentile bootstrap interval (each group resampled on its own)."""
    pos, neg = np.asarray(members, dtype=np.float64), np.asarray(others, dtype=np.float64)
    draws = [
        auc(rng.choice(pos, size=pos.size), rng.choice(neg, size=neg.size))
        for _ in range(resamples)
    ]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return {"auc": auc(pos, neg), "low": float(low), "high": float(high), "level": level}


def losses(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> FloatArray:
    """Per-example cross-entropy −log p[y] of a batch of class probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    picked = p[np.arange(y.size), y]
    return -np.log(np.clip(picked, 1e-12, 1.0))


def membership(
    member_losses: Sequence[FloatArray],
    other_losses: Sequence[FloatArray],
    *,
    rng: np.random.Generator,
    resamples: int = 1000,
) -> dict[str, Any]:
    """The loss-threshold attack's AUC per example and per device (mean loss), with intervals.

    Each argument holds one array of per-example losses per device.
    """
    members = [m for m in member_losses if m.size]
    others = [o for o in other_losses if o.size]
    per_example = auc_interval(
        -np.concatenate(members), -np.concatenate(others), rng=rng, resamples=resamples
    )
    per_device = auc_interval(
        -np.array([m.mean() for m in members]),
        -np.array([o.mean() for o in others]),
        rng=rng,
        resamples=resamples,
    )
    return {
        "per_example": per_example,
        "per_device": per_device,
        "member_devices": len(members),
        "non_member_devices": len(others),
        "member_examples": int(sum(m.size for m in members)),
        "non_member_examples": int(sum(o.size for o in others)),
        "member_mean_loss": float(np.mean(np.concatenate(members))),
        "non_member_mean_loss": float(np.mean(np.concatenate(others))),
    }


def cosines(delta: npt.ArrayLike, directions: npt.ArrayLike) -> FloatArray:
    """Cosine of ``delta`` with each unit row of ``directions``."""
    d = np.asarray(delta, dtype=np.float64)
    norm = float(np.linalg.norm(d))
    if norm == 0.0:
        return np.zeros(len(np.asarray(directions)))
    result: FloatArray = np.asarray(directions, dtype=np.float64) @ d / norm
    return result


EPSILON_CAP = 100.0
"""The largest ε the estimator resolves; a pair beyond it reads as this, flagged ``at_cap``."""


def _mass(mean: float, std: float, low: float, high: float) -> float:
    """N(mean, std²) mass of [low, high], from the nearer tail so far tails keep their digits."""
    if high == math.inf:
        return float(stats.norm.sf(low, mean, std))
    if low == -math.inf:
        return float(stats.norm.cdf(high, mean, std))
    if low > mean:
        return float(stats.norm.sf(low, mean, std) - stats.norm.sf(high, mean, std))
    return float(stats.norm.cdf(high, mean, std) - stats.norm.cdf(low, mean, std))


def hockey_stick(p: tuple[float, float], q: tuple[float, float], epsilon: float) -> float:
    """δ(ε) = ∫ (p − e^ε q)₊ between two Gaussians given as (mean, std), exactly.

    The set where log p − log q > ε is where a quadratic is positive: a half-line for equal
    variances, an interval or its complement otherwise; its masses come from normal CDFs.
    """
    (m1, s1), (m0, s0) = p, q
    a = 1.0 / (2 * s0**2) - 1.0 / (2 * s1**2)
    b = m1 / s1**2 - m0 / s0**2
    c = m0**2 / (2 * s0**2) - m1**2 / (2 * s1**2) + math.log(s0 / s1) - epsilon
    intervals: list[tuple[float, float]]
    if abs(a) <= 1e-12 * max(abs(b), 1e-300):  # equal variances: b·x + c > 0
        if b == 0:
            intervals = [(-math.inf, math.inf)] if c > 0 else []
        else:
            cut = -c / b
            intervals = [(cut, math.inf)] if b > 0 else [(-math.inf, cut)]
    else:
        disc = b * b - 4 * a * c
        if disc <= 0:
            intervals = [(-math.inf, math.inf)] if a > 0 else []
        else:
            root = math.sqrt(disc)
            r1, r2 = sorted(((-b - root) / (2 * a), (-b + root) / (2 * a)))
            intervals = [(-math.inf, r1), (r2, math.inf)] if a > 0 else [(r1, r2)]
    scale = math.exp(min(epsilon, 700.0))
    total = sum(_mass(m1, s1, lo, hi) - scale * _mass(m0, s0, lo, hi) for lo, hi in intervals)
    return max(0.0, total)


def gaussian_pair_epsilon(
    inserted: tuple[float, float], held_out: tuple[float, float], delta: float
) -> float:
    """The smallest ε with δ(ε) ≤ ``delta`` in both orders: the pair's ε at δ, by bisection.

    At most :data:`EPSILON_CAP`: a pair further apart returns the cap.
    """

    def epsilon_one_way(p: tuple[float, float], q: tuple[float, float]) -> float:
        if hockey_stick(p, q, 0.0) <= delta:
            return 0.0
        if hockey_stick(p, q, EPSILON_CAP) > delta:
            return EPSILON_CAP
        low, high = 0.0, EPSILON_CAP
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if hockey_stick(p, q, middle) > delta else (low, middle)
        return high

    return max(epsilon_one_way(inserted, held_out), epsilon_one_way(held_out, inserted))


def _fitted_epsilons(a: FloatArray, b: FloatArray, delta: float) -> tuple[float, float]:
    """ε at δ of Gaussians fitted to ``a`` and ``b``: each its own σ, and one pooled σ."""
    (ma, sa), (mb, sb) = (a.mean(), a.std(ddof=1)), (b.mean(), b.std(ddof=1))
    if sa == 0 and sb == 0:  # two point masses: apart or the same
        return (0.0, 0.0) if ma == mb else (EPSILON_CAP, EPSILON_CAP)
    # A group of identical cosines (a bootstrap draw of few canaries) fits a point mass: its
    # σ floored a billion times below the other's, so the pair reads as the limit it is.
    sa, sb = max(sa, 1e-9 * sb), max(sb, 1e-9 * sa)
    pooled = math.sqrt(((a.size - 1) * sa**2 + (b.size - 1) * sb**2) / (a.size + b.size - 2))
    own = gaussian_pair_epsilon((float(ma), float(sa)), (float(mb), float(sb)), delta)
    return own, gaussian_pair_epsilon((float(ma), pooled), (float(mb), pooled), delta)


def canary_epsilon(
    inserted: npt.ArrayLike,
    held_out: npt.ArrayLike,
    *,
    delta: float,
    rng: np.random.Generator | None = None,
    resamples: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Andrew et al.'s one-shot estimate: Gaussians fitted to each group's cosines, their ε.

    ``epsilon_lower`` fits each group its own σ (the paper's); ``epsilon_lower_equal_variance``
    one pooled σ, the Gaussian mechanism's shape: with few inserted canaries a σ of theirs
    fitted a little small puts a large ε in the far tails, so this reading is the steadier.
    With ``rng`` and ``resamples``, percentile bootstrap intervals of both (each group
    resampled on its own).
    """
    ins = np.asarray(inserted, dtype=np.float64)
    out = np.asarray(held_out, dtype=np.float64)
    if ins.size < 2 or out.size < 2:
        raise ValueError(
            f"fitting a Gaussian needs two cosines a group, got {ins.size} inserted and "
            f"{out.size} held out"
        )
    epsilon, equal = _fitted_epsilons(ins, out, delta)
    result: dict[str, Any] = {
        "epsilon_lower": epsilon,
        "epsilon_lower_equal_variance": equal,
        "at_cap": epsilon >= EPSILON_CAP,
        "delta": delta,
        "inserted": {
            "count": int(ins.size),
            "mean": float(ins.mean()),
            "std": float(ins.std(ddof=1)),
        },
        "held_out": {
            "count": int(out.size),
            "mean": float(out.mean()),
            "std": float(out.std(ddof=1)),
        },
    }
    if rng is not None and resamples > 0:
        draws = np.array(
            [
                _fitted_epsilons(
                    rng.choice(ins, size=ins.size), rng.choice(out, size=out.size), delta
                )
                for _ in range(resamples)
            ]
        )
        tail = (1.0 - level) / 2.0 * 100.0
        for key, column in (("interval", 0), ("interval_equal_variance", 1)):
            low, high = np.percentile(draws[:, column], [tail, 100.0 - tail])
            result[key] = {"low": float(low), "high": float(high), "level": level}
    return result
