"""Staged rollout as specifications: which move follows a gate verdict, and who is a canary."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coordinator.config import PromotionConfig
from coordinator.db.models import Stage
from coordinator.services.promotion import Verdict
from coordinator.services.rollout import Action, Advance, advance, in_canary

STEPS = (0.01, 0.1, 1.0)


def test_a_candidate_that_passes_becomes_a_canary_at_the_first_step():
    move = advance(STEPS, stage=Stage.CANDIDATE, step=None, verdict=Verdict.PROMOTE)

    assert move == Advance(Action.START, 0, 0.01)


@pytest.mark.parametrize(("step", "wider"), [(0, 0.1), (1, 1.0)])
def test_a_canary_that_passes_its_step_widens_to_the_next(step: int, wider: float):
    move = advance(STEPS, stage=Stage.CANARY, step=step, verdict=Verdict.PROMOTE)

    assert move == Advance(Action.WIDEN, step + 1, wider)


def test_a_canary_that_passes_its_last_step_goes_live():
    move = advance(STEPS, stage=Stage.CANARY, step=len(STEPS) - 1, verdict=Verdict.PROMOTE)

    assert move.action == Action.LIVE


@pytest.mark.parametrize("step", [0, 1, 2])
def test_a_canary_that_fails_a_gate_at_any_step_is_rolled_back(step: int):
    move = advance(STEPS, stage=Stage.CANARY, step=step, verdict=Verdict.ROLLBACK)

    assert move.action == Action.ROLLBACK


def test_a_failing_live_version_is_rolled_back_and_a_failing_candidate_only_holds():
    live = advance(STEPS, stage=Stage.LIVE, step=None, verdict=Verdict.ROLLBACK)
    candidate = advance(STEPS, stage=Stage.CANDIDATE, step=None, verdict=Verdict.ROLLBACK)

    assert (live.action, candidate.action) == (Action.ROLLBACK, Action.HOLD)


def test_too_few_reports_hold_a_canary_at_its_step():
    move = advance(STEPS, stage=Stage.CANARY, step=1, verdict=Verdict.HOLD)

    assert move == Advance(Action.HOLD, 1, 0.1)


@pytest.mark.parametrize("stage", [Stage.LIVE, Stage.RETIRED])
def test_a_passing_live_or_retired_version_has_nothing_left_to_widen(stage: Stage):
    assert advance(STEPS, stage=stage, step=None, verdict=Verdict.PROMOTE).action == Action.HOLD


def test_the_canary_cohort_is_stable_and_grows_monotonically_with_the_share():
    devices = [f"device-{i}" for i in range(4000)]

    cohorts = [{d for d in devices if in_canary(1, 7, d, share)} for share in STEPS]

    assert cohorts[0] <= cohorts[1] <= cohorts[2] == set(devices)
    assert 0.05 < len(cohorts[1]) / len(devices) < 0.15  # about a tenth, by the hash
    assert cohorts[1] == {d for d in devices if in_canary(1, 7, d, 0.1)}  # same answer again


def test_each_version_draws_its_own_canary_cohort():
    devices = [f"device-{i}" for i in range(2000)]

    first = {d for d in devices if in_canary(1, 7, d, 0.1)}
    second = {d for d in devices if in_canary(1, 8, d, 0.1)}

    assert first != second


@pytest.mark.parametrize("steps", [[], [0.1, 0.1], [0.5, 0.2], [0.0, 1.0], [0.1, 1.5]])
def test_rollout_steps_must_be_increasing_shares(steps: list[float]):
    with pytest.raises(ValidationError, match="rollout_steps"):
        PromotionConfig(rollout_steps=steps)
