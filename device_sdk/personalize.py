"""Personalization after download: fine-tune the global model locally, keep it only if better.

Non-IID devices are why users want personalization, and why plain fine-tuning is risky: a few
local steps help most devices but hurt some (an independent run on MNIST-MLP at Dirichlet
α = 0.1 saw 4 % of devices end worse than the global model; issue 20, part 5). So the device
splits its own training examples once into a fine-tuning part and a **validation** part that
never overlap, fine-tunes on the first, and keeps the fine-tuned weights only when they are
strictly better than the global ones on the second (accuracy, then loss as the tie-break);
otherwise it keeps the global model.

The fine-tune runs inside the plan's own signatures (``set_weights``, ``set_hparams``,
``train``, ``get_weights``): no new plan. ``scope="head"`` fine-tunes only the last layer
(FedPer / FedRep's personal head; Arivazhagan et al. 2019, Collins et al. ICML 2021): the plan
has no way to freeze variables, so after every ``train`` step the body's slices of the flat
weight vector are put back to the global ones. That is exact projected SGD on the head when
momentum is 0 (``set_weights`` zeroes the momentum slots anyway), which is why the fine-tune
runs with plain SGD. ``scope="all"`` fine-tunes every weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from device_sdk.errors import DeviceError, PlanError
from device_sdk.plan_runner import EvalResult, FloatArray, PlanRunner
from device_sdk.trainer import evaluate
from fedge.manifest import PlanManifest

Scope = Literal["head", "all"]
Examples = tuple[npt.NDArray[Any], npt.NDArray[Any]]


@dataclass(frozen=True)
class FineTune:
    """How a device personalizes: local steps, their learning rate and batch, the split."""

    steps: int = 20
    learning_rate: float = 0.05
    batch_size: int = 32
    validation_fraction: float = 0.2
    scope: Scope = "head"

    def __post_init__(self) -> None:
        """Refuse settings no fine-tune can run with, naming the field."""
        if self.steps < 1 or self.batch_size < 1:
            raise PlanError("personalization steps and batch_size must be at least 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise PlanError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not 0 < self.validation_fraction < 1:
            raise PlanError(
                f"validation_fraction must lie in (0, 1), got {self.validation_fraction}"
            )


@dataclass(frozen=True)
class Personalized:
    """The outcome of personalizing: both models' validation figures and which one is kept.

    ``baseline`` and ``personalized`` are the global and the fine-tuned weights evaluated on
    the device's validation split; ``weights`` are the kept ones (the fine-tuned weights when
    ``kept``, else the global ones), ``tuned`` the fine-tuned ones whatever the rule said.
    ``personalized`` is None when the fine-tune diverged (it is then never kept).
    """

    baseline: EvalResult
    personalized: EvalResult | None
    kept: bool
    weights: FloatArray
    tuned: FloatArray | None

    @property
    def baseline_accuracy(self) -> float:
        """Validation accuracy of the global model."""
        return self.baseline.accuracy

    @property
    def personalized_accuracy(self) -> float:
        """Validation accuracy of the fine-tuned model (NaN when it diverged)."""
        return math.nan if self.personalized is None else self.personalized.accuracy


def validation_split(
    num_examples: int, fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Disjoint ``(fine_tune, validation)`` indices covering ``range(num_examples)``.

    A random ``ceil(fraction · n)`` are held for validation (at least one, and at least one
    left to fine-tune on); with fewer than two examples there is nothing to split, and both
    are empty. Random, not the last ones: a device's examples may be stored by label.
    """
    if num_examples < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty
    held = min(max(1, math.ceil(fraction * num_examples)), num_examples - 1)
    order = rng.permutation(num_examples).astype(np.int64)
    return np.sort(order[held:]), np.sort(order[:held])


def head_mask(manifest: PlanManifest) -> npt.NDArray[np.bool_]:
    """True at the flat weights of the plan's last layer (its variables named ``LAYER/…``)."""
    layout = manifest.weights_layout
    last = layout[-1].name.rsplit("/", 1)[0]
    mask = np.zeros(manifest.num_params, dtype=bool)
    for piece in layout:
        if piece.name.rsplit("/", 1)[0] == last:
            mask[piece.offset : piece.offset + piece.size] = True
    return mask


def keep_if_better(baseline: EvalResult, tuned: EvalResult | None) -> bool:
    """The rule: keep the fine-tune only if strictly more accurate, or as accurate and lower loss.

    A diverged fine-tune (None, or a non-finite loss) is never kept.
    """
    if tuned is None or not math.isfinite(tuned.loss):
        return False
    if tuned.accuracy != baseline.accuracy:
        return tuned.accuracy > baseline.accuracy
    return tuned.loss < baseline.loss


def fine_tune(
    runner: PlanRunner,
    *,
    weights: FloatArray,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    settings: FineTune,
    rng: np.random.Generator,
) -> FloatArray | None:
    """``settings.steps`` plain-SGD steps from ``weights`` on ``(x, y)``; None if they diverge.

    Batches are drawn from reshuffled passes over the examples. With ``scope="head"`` the
    weights outside :func:`head_mask` are restored to ``weights`` after every step.
    """
    xs, ys = np.asarray(x), np.asarray(y)
    if len(xs) == 0:
        raise PlanError("cannot fine-tune on zero examples")
    frozen = None if settings.scope == "all" else ~head_mask(runner.manifest)
    runner.set_weights(weights)
    runner.set_anchor(weights)
    runner.set_hparams(learning_rate=settings.learning_rate, momentum=0.0, mu=0.0)
    order = np.zeros(0, np.int64)
    for _ in range(settings.steps):
        if order.size == 0:
            order = rng.permutation(len(xs))
        batch, order = order[: settings.batch_size], order[settings.batch_size :]
        if not math.isfinite(runner.train_step(xs[batch], ys[batch])):
            return None
        if frozen is not None:
            current = runner.get_weights()
            current[frozen] = weights[frozen]
            if not np.isfinite(current).all():
                return None
            runner.set_weights(current)
    tuned = runner.get_weights()
    return tuned if np.isfinite(tuned).all() else None


def personalize(
    runner: PlanRunner,
    *,
    global_weights: FloatArray,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    settings: FineTune,
    rng: np.random.Generator,
) -> Personalized:
    """Fine-tune ``global_weights`` on part of ``(x, y)``, keep it if better on the rest.

    ``(x, y)`` are the device's training examples (not the ones it holds out for federated
    evaluation). A device with fewer than two examples cannot validate a fine-tune and keeps
    the global model; so does one whose fine-tune diverges.
    """
    xs, ys = np.asarray(x), np.asarray(y)
    if len(xs) == 0:
        raise PlanError("cannot personalize on zero examples")
    train_index, validation_index = validation_split(len(xs), settings.validation_fraction, rng)
    runner.set_weights(global_weights)
    if validation_index.size == 0:
        baseline = evaluate(runner, xs, ys)
        return Personalized(baseline, None, False, global_weights, None)
    xv, yv = xs[validation_index], ys[validation_index]
    baseline = evaluate(runner, xv, yv)
    tuned = fine_tune(
        runner,
        weights=global_weights,
        x=xs[train_index],
        y=ys[train_index],
        settings=settings,
        rng=rng,
    )
    scored: EvalResult | None = None
    if tuned is not None:
        runner.set_weights(tuned)
        try:
            scored = evaluate(runner, xv, yv)
        except DeviceError:  # weights the plan cannot score count as a failed fine-tune
            scored = None
    kept = keep_if_better(baseline, scored)
    return Personalized(
        baseline=baseline,
        personalized=scored,
        kept=kept,
        weights=tuned if kept and tuned is not None else global_weights,
        tuned=tuned,
    )
