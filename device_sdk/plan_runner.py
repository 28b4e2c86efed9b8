"""Drive a training plan's signatures in a TFLite interpreter, with inputs checked first.

One :class:`PlanRunner` holds one interpreter. A CNN training interpreter takes many times the
memory of its weights (its tensors, gradients and optimizer slots; figures in
``benchmarks/RESULTS.md``), so callers that serve many (simulated) devices keep a small pool
of runners and swap weights in with :meth:`PlanRunner.set_weights` instead of holding one per
device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_sdk.errors import PlanError
from device_sdk.runtime import load_interpreter_class
from fedge.errors import ManifestError
from fedge.logs import native_chatter_dropped
from fedge.manifest import SIGNATURES, PlanManifest, manifest_path_for

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EvalResult:
    """Mean loss, accuracy and example count of an evaluation."""

    loss: float
    accuracy: float
    num_examples: int


class PlanRunner:
    """A loaded plan: train steps, inference, evaluation and flat-vector weight access."""

    def __init__(
        self,
        plan: bytes,
        manifest: PlanManifest,
        *,
        num_threads: int | None = None,
        runtime: str | None = None,
    ) -> None:
        """Load ``plan`` after checking it is the one ``manifest`` describes (sha256)."""
        try:
            manifest.verify_plan(plan)
        except ManifestError as exc:
            raise PlanError(str(exc)) from exc
        self.manifest = manifest
        self.runtime, interpreter_class = load_interpreter_class(runtime)
        with native_chatter_dropped():  # LiteRT's "Created ... XNNPACK delegate" line
            try:
                self._interpreter = interpreter_class(model_content=plan, num_threads=num_threads)
            except ValueError as exc:
                raise PlanError(f"the runtime {self.runtime} cannot load plan: {exc}") from exc
            present = set(self._interpreter.get_signature_list())
            missing = sorted(set(SIGNATURES) - present)
            if missing:
                raise PlanError(f"plan {manifest.name!r} lacks signatures: {', '.join(missing)}")
            # The delegate is applied at the first allocation: done here, its line is held.
            self._interpreter.allocate_tensors()
            self._runners: dict[str, Any] = {
                name: self._interpreter.get_signature_runner(name) for name in SIGNATURES
            }
        self._x_shape = tuple(manifest.inputs["x"].shape[1:])

    @classmethod
    def from_files(
        cls,
        plan_path: Path,
        manifest_path: Path | None = None,
        *,
        num_threads: int | None = None,
        runtime: str | None = None,
    ) -> PlanRunner:
        """Load ``DIR/NAME.tflite`` with the manifest beside it (``DIR/NAME.json``)."""
        manifest_path = manifest_path or manifest_path_for(plan_path)
        try:
            manifest = PlanManifest.from_json(manifest_path.read_text())
            plan = plan_path.read_bytes()
        except OSError as exc:
            raise PlanError(f"cannot read plan files: {exc}") from exc
        except ManifestError as exc:
            raise PlanError(f"{manifest_path}: {exc}") from exc
        return cls(plan, manifest, num_threads=num_threads, runtime=runtime)

    @property
    def num_params(self) -> int:
        """Length of the flat weight vector."""
        return self.manifest.num_params

    def get_weights(self) -> FloatArray:
        """A copy of all trainable weights as one flat float32 vector."""
        return np.array(self._runners["get_weights"]()["weights"], dtype=np.float32)

    def set_weights(self, weights: npt.ArrayLike) -> None:
        """Replace all trainable weights and zero the optimizer's momentum."""
        self._runners["set_weights"](weights=self._check_vector(weights, "weights"))

    def set_anchor(self, anchor: npt.ArrayLike) -> None:
        """Set FedProx's anchor: the weights the proximal term pulls towards."""
        self._runners["set_anchor"](anchor=self._check_vector(anchor, "anchor"))

    def set_hparams(self, *, learning_rate: float, momentum: float, mu: float) -> None:
        """Set the learning rate, momentum coefficient and FedProx mu for the next steps."""
        for label, value in (("learning_rate", learning_rate), ("momentum", momentum), ("mu", mu)):
            if not np.isfinite(value) or value < 0:
                raise PlanError(f"{label} must be a finite number >= 0, got {value!r}")
        # Shape (1,), not rank 0: ai-edge-litert 2.3.0's aarch64 wheel segfaults resizing a
        # rank-0 signature input (scripts/arm64/rank0_input.py); the plan broadcasts either.
        self._runners["set_hparams"](
            learning_rate=np.full((1,), learning_rate, np.float32),
            momentum=np.full((1,), momentum, np.float32),
            mu=np.full((1,), mu, np.float32),
        )

    def train_step(self, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Run one optimizer step on a batch; return the batch's mean loss before the step."""
        xb, yb = self._check_batch(x, y)
        return float(self._runners["train"](x=xb, y=yb)["loss"])

    def evaluate_batch(self, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, int]:
        """Mean loss and the number of correct predictions on a batch."""
        xb, yb = self._check_batch(x, y)
        out = self._runners["evaluate"](x=xb, y=yb)
        return float(out["loss"]), int(out["correct"])

    def infer(self, x: npt.ArrayLike) -> FloatArray:
        """Class probabilities for a batch."""
        xb = self._check_x(x)
        return np.array(self._runners["infer"](x=xb)["probabilities"], dtype=np.float32)

    def _check_x(self, x: npt.ArrayLike) -> FloatArray:
        array = np.asarray(x)
        if not np.issubdtype(array.dtype, np.floating):
            raise PlanError(f"x must hold floats, got {array.dtype}")
        if array.ndim < 1 or tuple(array.shape[1:]) != self._x_shape or array.shape[0] == 0:
            raise PlanError(
                f"x must have shape (batch>0, {', '.join(map(str, self._x_shape))}), "
                f"got {array.shape}"
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def _check_batch(
        self, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[FloatArray, npt.NDArray[np.int32]]:
        xb = self._check_x(x)
        labels = np.asarray(y)
        if not np.issubdtype(labels.dtype, np.integer):
            raise PlanError(f"y must hold integer class ids, got {labels.dtype}")
        if labels.shape != (xb.shape[0],):
            raise PlanError(f"y must have shape ({xb.shape[0]},), got {labels.shape}")
        if labels.min() < 0 or labels.max() >= self.manifest.num_classes:
            raise PlanError(f"labels must lie in [0, {self.manifest.num_classes})")
        return xb, np.ascontiguousarray(labels, dtype=np.int32)

    def _check_vector(self, vector: npt.ArrayLike, label: str) -> FloatArray:
        array = np.asarray(vector)
        if array.shape != (self.num_params,):
            raise PlanError(f"{label} must have shape ({self.num_params},), got {array.shape}")
        if array.dtype != np.float32:
            raise PlanError(f"{label} must be float32, got {array.dtype}")
        if not np.isfinite(array).all():
            raise PlanError(f"{label} contains NaN or Inf")
        return np.ascontiguousarray(array)
