"""Promotion gates as one pure function: promote, hold or roll back a version.

The registry (:mod:`coordinator.services.registry`) gathers the facts — the version's stage
and federated evaluation, its baseline's evaluation (the live version a candidate would
replace, or the one a live version replaced), its ε — and applies the decision; nothing here
reads the database, so the rules are specified in ``tests/coordinator/test_promotion.py``.

- too few reports (below the evaluation's ``min_reports``): hold, whatever the stage;
- every gate passes: a candidate or canary is promoted (to live), a live version holds;
- a gate fails: a canary or live version is rolled back, a candidate holds (it was never
  deployed; a later version may pass).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from coordinator.aggregation.evaluation import EvaluationSummary
from coordinator.config import PromotionConfig
from coordinator.db.models import Stage


class Verdict(enum.StrEnum):
    """What the gates say to do with a version."""

    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    """A verdict and the reasons behind it, in words for the operator and the stage history."""

    verdict: Verdict
    reasons: tuple[str, ...]


def decide(
    gates: PromotionConfig,
    *,
    stage: Stage,
    evaluation: EvaluationSummary | None,
    min_reports: int,
    baseline: EvaluationSummary | None = None,
    epsilon: float | None = None,
) -> Decision:
    """The gates' verdict on a version at ``stage`` with federated ``evaluation``.

    ``baseline`` is the live version's evaluation the worst-10 % gate compares with (None: no
    live version yet, so that gate passes); ``epsilon`` a DP version's ε (None without DP).
    """
    if stage == Stage.RETIRED:
        return Decision(Verdict.HOLD, ("retired: gates no longer apply",))
    reports = 0 if evaluation is None else evaluation.reports
    if evaluation is None or reports < min_reports:
        return Decision(Verdict.HOLD, (f"{reports} of {min_reports} evaluation reports",))
    failed = _failures(gates, evaluation, baseline, epsilon)
    if failed:
        verdict = Verdict.HOLD if stage == Stage.CANDIDATE else Verdict.ROLLBACK
        return Decision(verdict, failed)
    verdict = Verdict.HOLD if stage == Stage.LIVE else Verdict.PROMOTE
    return Decision(verdict, ("every gate passes",))


def _failures(
    gates: PromotionConfig,
    evaluation: EvaluationSummary,
    baseline: EvaluationSummary | None,
    epsilon: float | None,
) -> tuple[str, ...]:
    failed: list[str] = []
    if gates.worst10_margin is not None and baseline is not None:
        floor = baseline.worst10_accuracy - gates.worst10_margin
        if not evaluation.worst10_accuracy >= floor:  # NaN fails too
            failed.append(
                f"worst-10 % accuracy {evaluation.worst10_accuracy:.4f} is below the live "
                f"version's {baseline.worst10_accuracy:.4f} minus {gates.worst10_margin}"
            )
    if gates.min_mean_accuracy is not None and not (
        evaluation.mean_accuracy >= gates.min_mean_accuracy
    ):
        failed.append(
            f"mean accuracy {evaluation.mean_accuracy:.4f} is below {gates.min_mean_accuracy}"
        )
    cap = gates.max_epsilon
    if cap is not None and epsilon is not None and not (math.isfinite(epsilon) and epsilon <= cap):
        failed.append(f"ε = {epsilon:.4g} exceeds {cap}")
    return tuple(failed)
