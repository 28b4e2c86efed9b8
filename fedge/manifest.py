"""The plan manifest: what a training plan (``NAME.tflite``) holds and how to drive it.

The exporter (``models``) writes it; the device SDK and the coordinator read it. It is plain
JSON so that a device needs nothing beyond the standard library to parse it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedge.errors import ManifestError
from fedge.inference import InferencePatch, render

MANIFEST_FORMAT = "fedge.plan/1"

# The signatures every Fedge training plan exports, with their inputs and outputs.
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (("x", "y"), ("loss",)),
    "infer": (("x",), ("probabilities",)),
    "evaluate": (("x", "y"), ("loss", "correct")),
    "get_weights": ((), ("weights",)),
    "set_weights": (("weights",), ("num_params",)),
    "set_hparams": (("learning_rate", "momentum", "mu"), ("num_params",)),
    "set_anchor": (("anchor",), ("num_params",)),
}


@dataclass(frozen=True)
class TensorSpec:
    """Shape (``None`` for the batch axis) and dtype of one plan input."""

    shape: tuple[int | None, ...]
    dtype: str


@dataclass(frozen=True)
class WeightSlice:
    """Where one trainable variable lives in the flat float32 weight vector."""

    name: str
    shape: tuple[int, ...]
    offset: int
    size: int


@dataclass(frozen=True)
class HyperParameters:
    """Local training hyper-parameters: the plan's defaults, which a job may override per task.

    The one definition: a manifest holds the plan's, a task (:class:`fedge.protocol.Task`)
    carries the ones a device must train with. ``mu`` is FedProx's proximal term (Li et al.,
    MLSys 2020); 0 is plain FedAvg.
    """

    learning_rate: float
    momentum: float = 0.0
    mu: float = 0.0  # FedProx proximal term (Li et al., MLSys 2020); 0 is plain FedAvg
    batch_size: int = 32
    local_epochs: int = 1


@dataclass(frozen=True)
class PlanManifest:
    """Everything a device or a coordinator needs to know about a plan without loading it."""

    name: str
    version: str
    plan_file: str
    plan_sha256: str
    plan_bytes: int
    inputs: dict[str, TensorSpec]
    num_classes: int
    num_params: int
    weights_layout: tuple[WeightSlice, ...]
    optimizer: str
    hparams: HyperParameters
    initial_weights_file: str
    initial_weights_sha256: str
    created_by: str
    signatures: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {
            k: {"inputs": list(i), "outputs": list(o)} for k, (i, o) in SIGNATURES.items()
        }
    )
    format: str = MANIFEST_FORMAT
    # The inference-only template (see fedge.inference); absent in plans exported without one.
    inference_file: str | None = None
    inference_sha256: str | None = None
    inference_signature: str | None = None
    inference_patches: tuple[InferencePatch, ...] = ()

    def to_json(self) -> str:
        """Serialise as indented JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PlanManifest:
        """Parse and validate a manifest; a malformed one raises :class:`ManifestError`."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> PlanManifest:
        """Build from a decoded JSON object, checking the layout adds up."""
        if not isinstance(raw, dict):
            raise ManifestError("manifest must be a JSON object")
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"unsupported manifest format {raw.get('format')!r}")
        try:
            manifest = cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                plan_file=str(raw["plan_file"]),
                plan_sha256=str(raw["plan_sha256"]),
                plan_bytes=int(raw["plan_bytes"]),
                inputs={
                    k: TensorSpec(shape=tuple(v["shape"]), dtype=str(v["dtype"]))
                    for k, v in raw["inputs"].items()
                },
                num_classes=int(raw["num_classes"]),
                num_params=int(raw["num_params"]),
                weights_layout=tuple(
                    WeightSlice(
                        name=str(s["name"]),
                        shape=tuple(int(d) for d in s["shape"]),
                        offset=int(s["offset"]),
                        size=int(s["size"]),
                    )
                    for s in raw["weights_layout"]
                ),
                optimizer=str(raw["optimizer"]),
                hparams=HyperParameters(**raw["hparams"]),
                initial_weights_file=str(raw["initial_weights_file"]),
                initial_weights_sha256=str(raw["initial_weights_sha256"]),
                created_by=str(raw["created_by"]),
                signatures=raw["signatures"],
                format=raw["format"],
                inference_file=raw.get("inference_file"),
                inference_sha256=raw.get("inference_sha256"),
                inference_signature=raw.get("inference_signature"),
                inference_patches=tuple(
                    InferencePatch(
                        name=str(p["name"]),
                        byte_offset=int(p["byte_offset"]),
                        layout=str(p["layout"]),
                    )
                    for p in raw.get("inference_patches", ())
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"manifest is missing or has a bad field: {exc!r}") from exc
        manifest.check_layout()
        return manifest

    def check_layout(self) -> None:
        """Raise :class:`ManifestError` unless the weight slices tile the vector exactly."""
        offset = 0
        for piece in self.weights_layout:
            expected = 1
            for dim in piece.shape:
                expected *= dim
            if piece.offset != offset or piece.size != expected:
                raise ManifestError(f"weight slice {piece.name!r} does not tile the vector")
            offset += piece.size
        if offset != self.num_params:
            raise ManifestError(f"layout covers {offset} weights, manifest says {self.num_params}")

    def render_inference(self, template: bytes, weights: npt.NDArray[np.float32]) -> bytes:
        """An inference-only ``.tflite`` holding ``weights``, made from the template."""
        if not self.inference_patches or self.inference_sha256 is None:
            raise ManifestError(f"plan {self.name!r} was exported without an inference template")
        if hashlib.sha256(template).hexdigest() != self.inference_sha256:
            raise ManifestError("the inference template does not match the manifest's sha256")
        if weights.shape != (self.num_params,):
            raise ManifestError(f"expected {self.num_params} weights, got {weights.shape}")
        return render(
            template,
            self.inference_patches,
            {piece.name: piece.shape for piece in self.weights_layout},
            {piece.name: piece.offset for piece in self.weights_layout},
            weights,
        )

    def verify_plan(self, plan: bytes) -> None:
        """Raise :class:`ManifestError` unless ``plan`` is the plan this manifest describes."""
        digest = hashlib.sha256(plan).hexdigest()
        if digest != self.plan_sha256:
            raise ManifestError(
                f"plan sha256 {digest[:12]}… does not match the manifest's {self.plan_sha256[:12]}…"
            )


def manifest_path_for(plan_path: Path) -> Path:
    """The manifest that sits beside a plan: ``DIR/NAME.tflite`` → ``DIR/NAME.json``."""
    return plan_path.with_suffix(".json")
