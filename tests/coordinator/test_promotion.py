"""Promotion gates: promote, hold or roll back, from a version's stage and evaluation."""

from __future__ import annotations

import pytest

from coordinator.aggregation.evaluation import EvaluationSample, EvaluationSummary, summarize
from coordinator.config import PromotionConfig
from coordinator.db.models import Stage
from coordinator.services.promotion import Verdict, decide

GATES = PromotionConfig(worst10_margin=0.05, min_mean_accuracy=0.6, max_epsilon=8.0)


def evaluated(*accuracies: float) -> EvaluationSummary:
    return summarize([EvaluationSample(1.0 - a, a, 10) for a in accuracies])


GOOD = evaluated(*[0.8] * 9, 0.7)  # mean 0.79, worst-10 % 0.70
BASELINE = evaluated(*[0.8] * 9, 0.72)  # worst-10 % 0.72


@pytest.mark.parametrize("stage", [Stage.CANDIDATE, Stage.CANARY])
def test_a_candidate_or_canary_that_passes_every_gate_is_promoted(stage: Stage):
    decision = decide(GATES, stage=stage, evaluation=GOOD, min_reports=10, baseline=BASELINE)

    assert decision.verdict == Verdict.PROMOTE
    assert decision.reasons == ("every gate passes",)


def test_a_live_version_that_passes_holds():
    decision = decide(GATES, stage=Stage.LIVE, evaluation=GOOD, min_reports=10, baseline=BASELINE)

    assert decision.verdict == Verdict.HOLD


@pytest.mark.parametrize("stage", [Stage.CANDIDATE, Stage.CANARY, Stage.LIVE])
def test_too_few_reports_hold_whatever_the_stage_and_say_how_many(stage: Stage):
    decision = decide(GATES, stage=stage, evaluation=GOOD, min_reports=11, baseline=BASELINE)

    assert decision.verdict == Verdict.HOLD
    assert decision.reasons == ("10 of 11 evaluation reports",)


def test_no_evaluation_at_all_holds():
    assert decide(GATES, stage=Stage.CANARY, evaluation=None, min_reports=1).verdict == (
        Verdict.HOLD
    )


def test_worst10_below_the_live_versions_minus_the_margin_fails_the_gate():
    weak_tail = evaluated(*[0.9] * 9, 0.6)  # mean 0.87 passes, worst-10 % 0.60 < 0.72 - 0.05

    candidate = decide(
        GATES, stage=Stage.CANDIDATE, evaluation=weak_tail, min_reports=10, baseline=BASELINE
    )
    canary = decide(
        GATES, stage=Stage.CANARY, evaluation=weak_tail, min_reports=10, baseline=BASELINE
    )

    assert candidate.verdict == Verdict.HOLD  # never deployed: nothing to roll back
    assert canary.verdict == Verdict.ROLLBACK
    assert len(canary.reasons) == 1 and "worst-10 % accuracy 0.6000" in canary.reasons[0]


def test_worst10_within_the_margin_passes():
    within = evaluated(*[0.8] * 9, 0.68)  # 0.68 >= 0.72 - 0.05

    decision = decide(
        GATES, stage=Stage.CANARY, evaluation=within, min_reports=10, baseline=BASELINE
    )

    assert decision.verdict == Verdict.PROMOTE


def test_without_a_live_version_the_worst10_gate_has_nothing_to_compare_and_passes():
    weak_tail = evaluated(*[0.9] * 9, 0.1)

    decision = decide(GATES, stage=Stage.CANDIDATE, evaluation=weak_tail, min_reports=10)

    assert decision.verdict == Verdict.PROMOTE


def test_a_live_version_below_the_mean_accuracy_gate_is_rolled_back():
    poor = evaluated(*[0.5] * 10)

    decision = decide(GATES, stage=Stage.LIVE, evaluation=poor, min_reports=10)

    assert decision.verdict == Verdict.ROLLBACK
    assert decision.reasons == ("mean accuracy 0.5000 is below 0.6",)


def test_epsilon_above_the_gate_fails_and_no_epsilon_without_dp_passes():
    over = decide(GATES, stage=Stage.CANARY, evaluation=GOOD, min_reports=10, epsilon=9.5)
    no_dp = decide(GATES, stage=Stage.CANARY, evaluation=GOOD, min_reports=10, epsilon=None)

    assert over.verdict == Verdict.ROLLBACK and over.reasons == ("ε = 9.5 exceeds 8.0",)
    assert no_dp.verdict == Verdict.PROMOTE


def test_every_failed_gate_is_named():
    decision = decide(
        GATES,
        stage=Stage.LIVE,
        evaluation=evaluated(*[0.1] * 10),
        min_reports=10,
        baseline=BASELINE,
        epsilon=20.0,
    )

    assert decision.verdict == Verdict.ROLLBACK and len(decision.reasons) == 3


def test_unset_gates_pass_and_a_retired_version_is_left_alone():
    assert (
        decide(
            PromotionConfig(), stage=Stage.CANDIDATE, evaluation=evaluated(0.0), min_reports=1
        ).verdict
        == Verdict.PROMOTE
    )
    assert (
        decide(GATES, stage=Stage.RETIRED, evaluation=evaluated(0.0), min_reports=1).verdict
        == Verdict.HOLD
    )
