"""The privacy audit of a run: membership inference and an empirical ε from canary devices.

Two attacks on the final model, so a user sees what DP's guarantee does (issue 15):

- **Membership inference by loss threshold** (Yeom et al., CSF 2018): an example whose loss
  under the final model is low was more likely trained on. Members are the examples of devices
  whose updates entered a version; non-members those of ``held_out_devices`` devices kept out
  of the population. The attack's AUC is the rank statistic of −loss (Mann–Whitney), with a
  bootstrap interval, per example and per device (the device's mean loss: DP here is
  device-level, so the device is the unit the guarantee speaks of).
- **Canaries** (Andrew et al., ICLR 2024, "One-shot empirical privacy estimation for federated
  learning"): ``canaries`` devices send C·u, u a fixed random unit direction, instead of their
  trained delta; ``held_out_canaries`` more directions are drawn and never sent. The cosines of
  the final model delta (final − initial weights) with each direction are fitted by one
  Gaussian per group, and the ε at δ of telling those two Gaussians apart is the estimate. It
  is a lower bound only in the paper's sense (an estimate of what this attack achieves, not a
  proof), to read beside the accountant's upper bound.

The canary wrapper follows :class:`simulator.attacks.Adversary`: the device runs its own
session and its own training; only the delta handed to the session is replaced, so the device
still clips to the task's C, and the coordinator re-checks it and counts it like any other.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from device_sdk.session import Failure
from device_sdk.trainer import TrainResult
from simulator.config import AuditConfig

Examples = tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AuditPlan:
    """Who is held out and who is a canary in one run; picklable for the workers."""

    config: AuditConfig
    held_out: frozenset[int]
    canaries: tuple[int, ...]
    """Canary devices, in the order of their directions (direction i is device canaries[i]'s)."""
    seed: int

    @classmethod
    def draw(
        cls, config: AuditConfig, *, devices: int, seed: int, exclude: frozenset[int] = frozenset()
    ) -> AuditPlan | None:
        """The run's held-out and canary devices, none of ``exclude`` (malicious); None: off."""
        if not config.enabled:
            return None
        pool = np.setdiff1d(np.arange(devices), np.fromiter(exclude, dtype=np.int64))
        size = min(pool.size, config.held_out_devices + config.canaries)
        chosen = np.random.default_rng([seed, 31]).choice(pool, size=size, replace=False)
        held = chosen[: config.held_out_devices]
        canaries = chosen[config.held_out_devices :]
        return cls(config, frozenset(int(d) for d in held), tuple(int(d) for d in canaries), seed)

    def is_canary(self, device: int) -> bool:
        """Whether ``device`` sends a canary."""
        return device in self._index

    @functools.cached_property
    def _index(self) -> dict[int, int]:
        return {device: i for i, device in enumerate(self.canaries)}

    def direction(self, index: int, size: int) -> npt.NDArray[np.float64]:
        """Canary direction ``index`` of a model with ``size`` weights: uniform on the sphere.

        Inserted canaries are indices 0 … canaries − 1, held-out ones follow. A normalised
        standard Gaussian vector is uniform on the unit sphere (Muller 1959).
        """
        vector = np.random.default_rng([self.seed, 37, index]).standard_normal(size)
        direction: npt.NDArray[np.float64] = vector / np.linalg.norm(vector)
        return direction

    def directions(self) -> range:
        """Indices of every direction: the inserted ones, then the held-out ones."""
        return range(len(self.canaries) + self.config.held_out_canaries)

    def train(
        self,
        device: int,
        examples: Examples,
        train: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int32]], TrainResult | Failure],
        *,
        clip_norm: float | None,
    ) -> TrainResult | Failure:
        """``train`` on ``device``'s examples; a canary device's delta becomes C·u (float64)."""
        result = train(*examples)
        index = self._index.get(device)
        if index is None or isinstance(result, Failure):
            return result
        norm = clip_norm if clip_norm is not None else self.config.canary_norm
        canary = self.direction(index, result.delta.size) * norm
        return replace(result, delta=canary.astype(np.float32))


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


def run_audit(
    plan: AuditPlan,
    *,
    infer: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    examples: Callable[[int], Examples],
    initial: npt.ArrayLike,
    final: npt.ArrayLike,
    contributions: npt.NDArray[np.integer[Any]],
    privacy: dict[str, Any] | None,
    exclude: frozenset[int] = frozenset(),
    data_mode: str = "disjoint",
) -> dict[str, Any]:
    """Both attacks on a finished run; ``infer`` holds the final weights already.

    Members are the devices with an accepted update, neither canaries nor in ``exclude``
    (malicious); non-members the held-out devices. ``privacy`` is the run's last version's
    privacy metadata (None without DP): its δ is the estimate's and its PLD ε the upper bound.
    """
    config = plan.config
    rng = np.random.default_rng([plan.seed, 41])

    def device_losses(device: int) -> FloatArray:
        x, y = examples(device)
        if len(y) == 0:
            return np.zeros(0)
        batches = [
            losses(infer(x[start : start + 256]), y[start : start + 256])
            for start in range(0, len(y), 256)
        ]
        return np.concatenate(batches)

    skip = set(plan.canaries) | set(exclude) | set(plan.held_out)
    members = [d for d in np.flatnonzero(contributions > 0).tolist() if d not in skip]
    attack: dict[str, Any] | None = None
    if members and plan.held_out:
        attack = membership(
            [device_losses(d) for d in members],
            [device_losses(d) for d in sorted(plan.held_out)],
            rng=rng,
            resamples=config.bootstrap,
        )
    delta_model = np.asarray(final, dtype=np.float64) - np.asarray(initial, dtype=np.float64)
    size = delta_model.size
    entered = [i for i, d in enumerate(plan.canaries) if contributions[d] > 0]
    held = range(len(plan.canaries), len(plan.directions()))
    cos_in = [float(cosines(delta_model, plan.direction(i, size)[None, :])[0]) for i in entered]
    cos_out = [float(cosines(delta_model, plan.direction(i, size)[None, :])[0]) for i in held]
    delta = float(privacy["delta"]) if privacy else config.delta
    canaries: dict[str, Any] = {
        "devices": len(plan.canaries),
        "entered": len(entered),
        "contributions_per_entered": (
            float(np.mean([contributions[plan.canaries[i]] for i in entered])) if entered else 0
        ),
        "held_out_std_times_sqrt_p": float(np.std(cos_out) * math.sqrt(size)),
    }
    if len(entered) >= 2:
        canaries.update(
            canary_epsilon(
                cos_in, cos_out, delta=delta, rng=rng, resamples=min(config.bootstrap, 200)
            )
        )
    upper = None if privacy is None else (privacy.get("epsilon_pld") or privacy.get("epsilon"))
    method = None
    if privacy is not None:
        method = "pld" if privacy.get("epsilon_pld") is not None else privacy.get("method")
    return {
        "membership": attack,
        "canaries": canaries,
        "epsilon_lower": canaries.get("epsilon_lower"),
        "epsilon_upper": upper,
        "epsilon_upper_method": method,
        "delta": delta,
        "assumptions": {
            "threat_model": "the final model and the initial weights (not the versions between)",
            "members": "devices with at least one accepted update, not canaries or malicious",
            "non_members": f"{len(plan.held_out)} devices drawn from the run's seed and kept "
            "out of the population (they never check in)",
            "data_mode": data_mode,
            "canaries": "C·u per update, u uniform on the unit sphere; inserted = canary "
            "devices with an accepted update; held out = directions never sent",
            "epsilon_lower": "Andrew et al. 2024: ε at δ of two Gaussians fitted to the "
            "cosines; an estimate of this attack's power, not a proven bound",
            "interval": f"percentile bootstrap, {config.bootstrap} resamples (AUC; "
            f"{min(config.bootstrap, 200)} for ε_lower), each group resampled on its own "
            "(per example: examples treated as independent, so that interval is too narrow)",
        },
    }
