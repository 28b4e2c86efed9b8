"""Export a zoo model: plan ``NAME.tflite``, ``NAME.json``, ``NAME.weights``, ``NAME.infer.tflite``.

Conversion allows TFLite builtins only; if any op would need Flex, export fails with
:class:`~models.errors.FlexOpsError` naming the ops instead of writing a plan that no device
can run.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import fedge
from fedge.inference import LAYOUTS, InferencePatch, arrange
from fedge.manifest import PlanManifest, TensorSpec
from fedge.wire import encode_vector
from models import zoo
from models.errors import ExportError, FlexOpsError
from models.plan import TrainingPlan

_OP_NAME = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


@dataclass(frozen=True)
class ExportedPlan:
    """Paths written by :func:`export_plan` and the manifest they carry."""

    plan_path: Path
    manifest_path: Path
    weights_path: Path
    inference_path: Path
    manifest: PlanManifest


def convert_builtins_only(module: tf.Module, signatures: dict[str, object], name: str) -> bytes:
    """Convert a module's signatures to a ``.tflite`` flatbuffer made of builtin ops only.

    Raises :class:`FlexOpsError` naming every op that would need Flex.
    """
    with tempfile.TemporaryDirectory(prefix="fedge-export-") as saved:
        tf.saved_model.save(module, saved, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises ConverterError, not exported publicly
            ops = sorted(set(_OP_NAME.findall(str(exc))))
            if ops:
                raise FlexOpsError(name, ops) from exc
            raise ExportError(f"plan {name!r} failed to convert: {exc}") from exc


def inference_template(plan: TrainingPlan, name: str) -> tuple[bytes, list[InferencePatch], str]:
    """The forward pass with weights frozen as constants, and where each weight landed.

    Converted with random probe weights, so every tensor's bytes are distinct and can be found
    in the flatbuffer, as they are or in the layout the converter chose (FULLY_CONNECTED stores
    its matrix transposed). The plan's own weights are restored afterwards.
    """
    saved = plan.get_weights()["weights"].numpy()
    probe = np.random.default_rng(0x5EED).normal(0.0, 1.0, plan.num_params).astype(np.float32)
    plan.set_weights(probe)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [plan.infer.get_concrete_function()], plan
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        template = bytes(converter.convert())
    finally:
        plan.set_weights(saved)
    patches = []
    for piece in plan.layout:
        tensor = probe[piece.offset : piece.offset + piece.size].reshape(piece.shape)
        for layout in LAYOUTS:
            if layout != "direct" and tensor.ndim < 2:
                continue
            data = arrange(tensor, layout).tobytes()
            at = template.find(data)
            if at >= 0 and template.find(data, at + 1) < 0:
                patches.append(InferencePatch(name=piece.name, byte_offset=at, layout=layout))
                break
        else:
            raise ExportError(f"plan {name!r}: cannot locate {piece.name} in the inference model")
    return template, patches, "serving_default"


def export_plan(name: str, out_dir: Path, *, seed: int = 0) -> ExportedPlan:
    """Build zoo model ``name`` with initial weights from ``seed`` and write its plan files."""
    spec = zoo.get(name)
    plan = TrainingPlan(spec, seed=seed)
    flatbuffer = convert_builtins_only(plan, plan.signatures(), name)
    initial = encode_vector(plan.get_weights()["weights"].numpy())
    template, patches, inference_signature = inference_template(plan, name)

    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / f"{name}.tflite"
    weights_path = out_dir / f"{name}.weights"
    inference_path = out_dir / f"{name}.infer.tflite"
    manifest_path = out_dir / f"{name}.json"
    manifest = PlanManifest(
        name=name,
        version=spec.version,
        plan_file=plan_path.name,
        plan_sha256=hashlib.sha256(flatbuffer).hexdigest(),
        plan_bytes=len(flatbuffer),
        inputs={
            "x": TensorSpec(shape=(None, *spec.input_shape), dtype="float32"),
            "y": TensorSpec(shape=(None,), dtype="int32"),
        },
        num_classes=spec.num_classes,
        num_params=plan.num_params,
        weights_layout=plan.layout,
        optimizer="sgd_momentum",
        hparams=spec.hparams,
        initial_weights_file=weights_path.name,
        initial_weights_sha256=hashlib.sha256(initial).hexdigest(),
        created_by=f"fedge {fedge.__version__}, tensorflow {tf.__version__}",
        inference_file=inference_path.name,
        inference_sha256=hashlib.sha256(template).hexdigest(),
        inference_signature=inference_signature,
        inference_patches=tuple(patches),
    )
    plan_path.write_bytes(flatbuffer)
    weights_path.write_bytes(initial)
    inference_path.write_bytes(template)
    manifest_path.write_text(manifest.to_json())
    return ExportedPlan(plan_path, manifest_path, weights_path, inference_path, manifest)
