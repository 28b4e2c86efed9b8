"""Export a zoo model to a training plan: ``NAME.tflite``, ``NAME.json`` and ``NAME.weights``.

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

import tensorflow as tf

import fedge
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


def export_plan(name: str, out_dir: Path, *, seed: int = 0) -> ExportedPlan:
    """Build zoo model ``name`` with initial weights from ``seed`` and write its plan files."""
    spec = zoo.get(name)
    plan = TrainingPlan(spec, seed=seed)
    flatbuffer = convert_builtins_only(plan, plan.signatures(), name)
    initial = encode_vector(plan.get_weights()["weights"].numpy())

    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / f"{name}.tflite"
    weights_path = out_dir / f"{name}.weights"
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
    )
    plan_path.write_bytes(flatbuffer)
    weights_path.write_bytes(initial)
    manifest_path.write_text(manifest.to_json())
    return ExportedPlan(plan_path, manifest_path, weights_path, manifest)
