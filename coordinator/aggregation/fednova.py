"""FedNova: normalised averaging of updates that took different numbers of local steps.

Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization" (NeurIPS 2020). A device that took τᵢ local steps moves further than one that took
fewer, so FedAvg's plain mean of deltas drifts towards the objective of the devices that worked
most. FedNova divides each delta by ‖aᵢ‖₁, how much its τᵢ steps amplified the gradient (τᵢ for
plain SGD), and rescales the mean by the effective step count τ_eff = Σ pᵢ‖aᵢ‖₁ (§4, eq. 6):

    Δ = τ_eff · Σ pᵢ Δᵢ / ‖aᵢ‖₁,   pᵢ = nᵢ / Σ nⱼ.

With every ‖aᵢ‖₁ equal it is exactly FedAvg's mean. A frozen object holding configuration only,
like :class:`~coordinator.aggregation.fedavg.FedAvgRound`, and streamed the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from coordinator.aggregation.accumulator import FloatArray, WeightedSum, Weighting, example_weight
from coordinator.aggregation.errors import AggregationError, NonFiniteError
from coordinator.aggregation.fedavg import RoundMeasurements
from coordinator.aggregation.norms import NormMoments, l2_norm
from coordinator.aggregation.server_optimizers import OptimizerState, ServerOptimizer, ServerSGD

_SUM = WeightedSum()


def local_step_norm(
    steps: int, *, learning_rate: float, momentum: float = 0.0, mu: float = 0.0
) -> float:
    """‖aᵢ‖₁ of ``steps`` local steps of heavy-ball SGD with FedProx's proximal term μ.

    The plans' step is ``v ← ρ·v + g + μ·(w − w₀)``, ``w ← w − η·v`` (``models/plan.py``), so
    the delta is −η·Σₖ aₖ·gₖ with aₖ the weight that step k's gradient carries to the end.
    FedNova's closed forms (Wang et al. 2020, §5): plain SGD τ; momentum ρ
    ``[τ − ρ(1 − ρ^τ)/(1 − ρ)] / (1 − ρ)``; proximal ``[1 − (1 − ημ)^τ] / (ημ)``. With both,
    the same linear recursion is summed step by step.
    """
    if steps < 1:
        raise AggregationError(f"local steps must be >= 1, got {steps}")
    if not (learning_rate > 0 and 0 <= momentum < 1 and mu >= 0):
        raise AggregationError(
            f"need learning_rate > 0, 0 <= momentum < 1, mu >= 0; got {learning_rate}, "
            f"{momentum}, {mu}"
        )
    if mu == 0:
        if momentum == 0:
            return float(steps)
        return (steps - momentum * (1 - momentum**steps) / (1 - momentum)) / (1 - momentum)
    if momentum == 0:
        shrink = learning_rate * mu
        if shrink == 0:  # ημ underflowed (a subnormal μ): the limit τ, as without μ
            return float(steps)
        if shrink < 1:  # expm1/log1p: exact for a tiny ημ, where 1 − (1 − ημ)^τ cancels
            return -math.expm1(steps * math.log1p(-shrink)) / shrink
        return (1 - (1 - shrink) ** steps) / shrink
    return _summed(steps, learning_rate=learning_rate, momentum=momentum, mu=mu)


def _summed(steps: int, *, learning_rate: float, momentum: float, mu: float) -> float:
    """Σₖ aₖ by the recursion itself: the displacement after ``steps`` unit gradients, over −η."""
    velocity, displacement = 0.0, 0.0
    for _ in range(steps):
        velocity = momentum * velocity + 1.0 + mu * displacement
        displacement -= learning_rate * velocity
    return -displacement / learning_rate


@dataclass(frozen=True, kw_only=True)
class FedNovaRound:
    """Synchronous FedNova with a pluggable server optimizer (``ServerSGD()``: the paper's).

    ``weighting="uniform"`` gives every update pᵢ = 1/n instead of nᵢ/N.
    """

    server_optimizer: ServerOptimizer = field(default_factory=ServerSGD)
    weighting: Weighting = "examples"

    def step(
        self,
        weights: FloatArray,
        optimizer_state: OptimizerState,
        updates: Iterable[tuple[FloatArray, int, float]],
    ) -> tuple[FloatArray, OptimizerState, RoundMeasurements]:
        """Aggregate ``(delta, num_examples, step_norm)`` triples, streamed; one server step.

        ``step_norm`` is the update's ‖aᵢ‖₁ (:func:`local_step_norm`). Raises
        :class:`AggregationError` for a bad update or when there are none, and
        :class:`NonFiniteError` when the normalised mean overflows float32.
        """
        total = _SUM.start(optimizer_state.num_params)
        norms, examples, weight_sum, tau_sum = NormMoments(), 0, 0.0, 0.0
        for delta, num_examples, step_norm in updates:
            if not (math.isfinite(step_norm) and step_norm > 0):
                raise AggregationError(f"a step norm must be finite and > 0, got {step_norm}")
            weight = example_weight(num_examples, self.weighting)  # pᵢ up to the common Σ
            total = _SUM.add(total, delta, weight=weight / step_norm)
            weight_sum, tau_sum = weight_sum + weight, tau_sum + weight * step_norm
            norms, examples = norms.add(l2_norm(delta)), examples + int(num_examples)
        if total.count == 0:
            raise AggregationError("a round needs at least one update to aggregate")
        tau_effective = tau_sum / weight_sum
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            mean = (total.total * (tau_effective / weight_sum)).astype(np.float32)
        if not np.isfinite(mean).all():
            raise NonFiniteError("the normalised mean delta overflows float32; the model is kept")
        new_weights, new_state = self.server_optimizer.apply(weights, mean, optimizer_state)
        measurements = RoundMeasurements(
            count=total.count,
            num_examples=examples,
            update_norm_mean=norms.mean,
            update_norm_variance=norms.variance,
        )
        return new_weights, new_state, measurements
