"""Federated evaluation statistics of one version: mean, quantiles, worst-10 %, histogram, tiers.

Pure numpy over per-device reports. Each device counts once (the fleet's distribution of
accuracy is what an operator must see, Wang et al. 2019, "Federated Evaluation of On-device
Personalization"); the example-weighted means are given beside the device means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HISTOGRAM_BINS = 10  # accuracy in [0, 1], ten equal bins, the last one closed
WORST_SHARE = 0.1


@dataclass(frozen=True)
class EvaluationSample:
    """One device's report of one version."""

    loss: float
    accuracy: float
    num_examples: int
    tier: str = ""


@dataclass(frozen=True)
class EvaluationSummary:
    """A version's federated evaluation; ``by_tier`` has one summary per known tier."""

    reports: int
    examples: int
    mean_accuracy: float  # over devices
    mean_loss: float  # over devices
    weighted_accuracy: float  # over examples
    weighted_loss: float
    worst10_accuracy: float  # mean of the lowest decile of per-device accuracy
    quantiles: Mapping[str, float]  # "p10", "p25"... of per-device accuracy
    histogram: Sequence[int]  # devices per accuracy bin [0, 0.1), … [0.9, 1.0]
    by_tier: Mapping[str, EvaluationSummary] = field(default_factory=dict)


def worst_share_mean(values: Sequence[float] | np.ndarray, share: float = WORST_SHARE) -> float:
    """Mean of the lowest ``ceil(share · n)`` values (at least one); NaN for none."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        return math.nan
    return float(ordered[: max(1, math.ceil(share * ordered.size))].mean())


def summarize(samples: Sequence[EvaluationSample], *, tiers: bool = True) -> EvaluationSummary:
    """The summary of ``samples`` (at least one), per tier too when some name a tier."""
    if not samples:
        raise ValueError("no evaluation reports to summarize")
    accuracy = np.array([s.accuracy for s in samples], dtype=np.float64)
    loss = np.array([s.loss for s in samples], dtype=np.float64)
    examples = np.array([s.num_examples for s in samples], dtype=np.float64)
    counts, _ = np.histogram(accuracy, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    by_tier: dict[str, EvaluationSummary] = {}
    if tiers:
        names = sorted({s.tier for s in samples if s.tier})
        for name in names:
            by_tier[name] = summarize([s for s in samples if s.tier == name], tiers=False)
    return EvaluationSummary(
        reports=len(samples),
        examples=int(examples.sum()),
        mean_accuracy=float(accuracy.mean()),
        mean_loss=float(loss.mean()),
        weighted_accuracy=float(np.average(accuracy, weights=examples)),
        weighted_loss=float(np.average(loss, weights=examples)),
        worst10_accuracy=worst_share_mean(accuracy),
        quantiles={f"p{round(q * 100)}": float(np.quantile(accuracy, q)) for q in QUANTILES},
        histogram=[int(c) for c in counts],
        by_tier=by_tier,
    )
