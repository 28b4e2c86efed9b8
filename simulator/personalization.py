"""Personalizing the final model on the fairness sample: per-device gains, with and without rule.

Each sampled device runs :func:`device_sdk.personalize.personalize` on its own local examples
(fine-tune on part, judge on the rest) and is then scored, as the fairness figures are, on
held-out test examples with its own label mix (:meth:`DeviceData.held_out`), which it never
trained or validated on. Three accuracies per device: the global model's (baseline), the
model the rule keeps, and the fine-tuned model kept regardless ("plain fine-tuning"), so the
rule's value is visible beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.aggregation.evaluation import worst_share_mean
from device_sdk.personalize import FineTune, personalize
from device_sdk.plan_runner import FloatArray, PlanRunner
from device_sdk.trainer import evaluate
from simulator.config import PersonalizationConfig
from simulator.device_data import DeviceData


@dataclass(frozen=True)
class DeviceScores:
    """Held-out test accuracy of one device under the global, kept and fine-tuned models."""

    device: int
    baseline: float
    with_rule: float
    fine_tuned: float  # 0 when the fine-tune diverged: its weights predict nothing
    kept: bool


def settings_of(config: PersonalizationConfig) -> FineTune:
    """The device SDK's fine-tune settings for a run's ``personalization`` table."""
    return FineTune(
        steps=config.steps,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        validation_fraction=config.validation_fraction,
        scope=config.scope,
    )


def personalize_devices(
    runner: PlanRunner,
    data: DeviceData,
    global_weights: FloatArray,
    devices: npt.NDArray[np.int64],
    config: PersonalizationConfig,
    *,
    seed: int,
) -> list[DeviceScores]:
    """Personalize ``global_weights`` on each of ``devices`` and score all three models.

    Devices without local or held-out test examples are skipped (nothing to fine-tune or score).
    Each device's split and batches come from its own generator, derived from ``seed``.
    """
    settings = settings_of(config)
    scores = []
    for device in devices:
        x, y = data.examples(int(device))
        test_x, test_y = data.held_out(int(device))
        if len(y) == 0 or len(test_y) == 0:
            continue
        outcome = personalize(
            runner,
            global_weights=global_weights,
            x=x,
            y=y,
            settings=settings,
            rng=np.random.default_rng([seed, 23, int(device)]),
        )
        runner.set_weights(global_weights)
        baseline = evaluate(runner, test_x, test_y).accuracy
        fine_tuned = 0.0
        if outcome.tuned is not None:
            runner.set_weights(outcome.tuned)
            fine_tuned = evaluate(runner, test_x, test_y).accuracy
        scores.append(
            DeviceScores(
                device=int(device),
                baseline=baseline,
                with_rule=fine_tuned if outcome.kept else baseline,
                fine_tuned=fine_tuned,
                kept=outcome.kept,
            )
        )
    return scores


def summarize(scores: list[DeviceScores], config: PersonalizationConfig) -> dict[str, Any]:
    """Mean, worst-10 % and its gain, and the shares hurt and helped, with and without the rule.

    A device is *hurt* when its test accuracy under the model it ends with is below the global
    model's, *helped* when above. The worst-10 % gain is the worst-10 % mean of the
    personalized accuracies minus that of the baseline ones (the fleet's lowest decile before
    and after, not necessarily the same devices).
    """
    if not scores:
        return {"devices": 0, "settings": config.model_dump()}
    baseline = np.array([s.baseline for s in scores], dtype=np.float64)

    def side(values: npt.NDArray[np.float64]) -> dict[str, float]:
        return {
            "mean": float(values.mean()),
            "worst10": worst_share_mean(values),
            "mean_gain": float((values - baseline).mean()),
            "worst10_gain": worst_share_mean(values) - worst_share_mean(baseline),
            "hurt_share": float(np.mean(values < baseline)),
            "helped_share": float(np.mean(values > baseline)),
        }

    return {
        "devices": len(scores),
        "settings": config.model_dump(),
        "baseline": {
            "mean": float(baseline.mean()),
            "worst10": worst_share_mean(baseline),
        },
        "keep_if_better": side(np.array([s.with_rule for s in scores], dtype=np.float64))
        | {"kept_share": float(np.mean([s.kept for s in scores]))},
        "fine_tune_always": side(np.array([s.fine_tuned for s in scores], dtype=np.float64)),
    }
