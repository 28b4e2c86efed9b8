"""Time one training step of every zoo plan in LiteRT against TensorFlow, and a trainer's memory.

For each model in :data:`models.zoo.ZOO` the plan is exported to a temporary directory and
timed at batch 32 (median over repeats, after warm-up) in:

- LiteRT (``ai_edge_litert``), the device runtime, running the exported ``train`` signature;
- TensorFlow running the very same :class:`~models.plan.TrainingPlan` module (``tf.function``);
- TensorFlow running a *native* twin: the same layers, weights, loss and optimizer, but with
  TensorFlow's own ``conv2d`` / ``max_pool2d`` / ``relu`` and their (Flex-only) gradients. This
  is the peer to beat; it cannot be exported.

The three are sampled in interleaved rounds so that load from other processes on a shared
machine falls on all of them alike; compare the ratios more than the milliseconds. The trainer's
memory is measured in a fresh subprocess that imports only LiteRT and numpy, as a device would.
``tflite_runtime`` gets a column when it is importable, or when ``FEDGE_TFLITE_PYTHON`` names
the interpreter of an environment that has it (``make test`` builds ``.venv-tflite``); it always
runs in a subprocess, since it clashes with TensorFlow in one process.

Run: ``.venv/bin/python -m benchmarks.device_step [--repeats N] [--models a,b]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from benchmarks.harness import (
    add_json_argument,
    cell,
    emit,
    interleave,
    load_average,
    print_table,
    ratio,
    samples_ms,
)
from models import zoo
from models.export import export_plan
from models.layers import Conv3x3, Dense, Flatten, MaxPool2x2
from models.plan import TrainingPlan

ROUNDS = 3

# Runs in a fresh interpreter that imports neither TensorFlow nor Fedge: a device's trainer.
_TRAINER = """
import json, statistics, sys, time
import numpy as np
runtime, path, threads, batch, steps, warmup, classes, *shape = sys.argv[1:]
if runtime == "tflite_runtime":
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
rng = np.random.default_rng(0)
x = rng.random((int(batch), *map(int, shape)), dtype=np.float32)
y = rng.integers(0, int(classes), int(batch)).astype(np.int32)
train = Interpreter(model_path=path, num_threads=int(threads)).get_signature_runner("train")
for _ in range(int(warmup)):
    train(x=x, y=y)
times = []
for _ in range(int(steps)):
    start = time.perf_counter()
    train(x=x, y=y)
    times.append(time.perf_counter() - start)
# VmHWM, not ru_maxrss: after fork + exec, Linux's ru_maxrss still counts the parent's peak.
with open("/proc/self/status") as status:
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith("Vm")}
print(json.dumps({
    "ms": 1e3 * statistics.median(times),
    "rss_mb": kb["VmRSS"] / 1024,
    "peak_rss_mb": kb["VmHWM"] / 1024,
    "tensorflow_loaded": "tensorflow" in sys.modules,
}))
"""


class NativePlan(TrainingPlan):
    """The plan's model with TensorFlow's own primitives and gradients (Flex ops: TF only)."""

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """Forward pass with ``tf.nn`` ops over the same variables as the exported plan."""
        for layer in self.layers:
            if isinstance(layer, Conv3x3):
                x = tf.nn.relu(tf.nn.conv2d(x, layer.kernel, 1, "SAME") + layer.bias)
            elif isinstance(layer, MaxPool2x2):
                x = tf.nn.max_pool2d(x, 2, 2, "VALID")
            elif isinstance(layer, Flatten):
                x = tf.reshape(x, [-1, layer.size])
            elif isinstance(layer, Dense):
                x = tf.matmul(x, layer.kernel) + layer.bias
                x = tf.nn.relu(x) if layer.relu else x
            else:
                raise TypeError(f"no native twin for layer {type(layer).__name__}")
        return x


@dataclass
class Row:
    """One model's measurements; times in ms per training step."""

    model: str
    litert_ms: float
    tf_same_ms: float
    tf_native_ms: float | None
    litert_over_tf_same: float
    litert_over_tf_native: float | None
    plan_bytes: int
    trainer_rss_mb: float
    trainer_peak_rss_mb: float
    trainer_litert_ms: float
    tflite_runtime_ms: float | None


def _timed(step: Callable[[], object], count: int) -> Callable[[], list[float]]:
    """One round's trial for :func:`interleave`: ``count`` timed calls of ``step``."""
    return lambda: samples_ms(step, count)


def _trainer(runtime: str, plan: Path, spec: zoo.ModelSpec, args: argparse.Namespace) -> dict:
    python = sys.executable
    if runtime == "tflite_runtime" and os.environ.get("FEDGE_TFLITE_PYTHON"):
        python = os.environ["FEDGE_TFLITE_PYTHON"]
    command = [
        python,
        "-c",
        _TRAINER,
        runtime,
        str(plan),
        str(args.threads),
        str(args.batch),
        str(args.repeats),
        str(args.warmup),
        str(spec.num_classes),
        *map(str, spec.input_shape),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(name: str, args: argparse.Namespace, tflite_runtime: bool) -> Row:
    """Export ``name``, time it in LiteRT and TensorFlow, and measure a fresh trainer."""
    spec = zoo.get(name)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *spec.input_shape), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, args.batch).astype(np.int32)
    x_tf, y_tf = tf.constant(x), tf.constant(y)

    with tempfile.TemporaryDirectory(prefix="fedge-bench-") as out:
        exported = export_plan(name, Path(out))
        interpreter = Interpreter(model_path=str(exported.plan_path), num_threads=args.threads)
        litert_train = interpreter.get_signature_runner("train")
        same = TrainingPlan(spec, seed=0)
        steps: dict[str, Callable[[], Any]] = {
            "litert": lambda: litert_train(x=x, y=y),
            "tf_same": lambda: same.train(x_tf, y_tf)["loss"].numpy(),
        }
        if any(isinstance(layer, Conv3x3 | MaxPool2x2) for layer in same.layers):
            native = NativePlan(spec, seed=0)
            steps["tf_native"] = lambda: native.train(x_tf, y_tf)["loss"].numpy()

        for step in steps.values():
            samples_ms(step, args.warmup)
        per_round = max(1, args.repeats // ROUNDS)
        trials = {key: _timed(step, per_round) for key, step in steps.items()}
        samples = interleave(trials, ROUNDS)
        ms = {
            key: statistics.median(chain.from_iterable(rounds)) for key, rounds in samples.items()
        }

        trainer = _trainer("ai_edge_litert", exported.plan_path, spec, args)
        if trainer["tensorflow_loaded"]:
            raise RuntimeError("the trainer subprocess imported TensorFlow")
        other = (
            _trainer("tflite_runtime", exported.plan_path, spec, args) if tflite_runtime else None
        )

    native_ms = ms.get("tf_native")
    return Row(
        model=name,
        litert_ms=ms["litert"],
        tf_same_ms=ms["tf_same"],
        tf_native_ms=native_ms,
        litert_over_tf_same=ms["litert"] / ms["tf_same"],
        litert_over_tf_native=ratio(ms["litert"], native_ms),
        plan_bytes=exported.manifest.plan_bytes,
        trainer_rss_mb=trainer["rss_mb"],
        trainer_peak_rss_mb=trainer["peak_rss_mb"],
        trainer_litert_ms=trainer["ms"],
        tflite_runtime_ms=other["ms"] if other else None,
    )


def print_rows(rows: list[Row], tflite_runtime: bool) -> None:
    """Print the rows side by side."""
    columns = [("model", 18), ("LiteRT", 9), ("TF same", 9), ("TF nat.", 9), ("LR/same", 9)]
    columns += [("LR/nat.", 9), ("plan B", 10), ("RSS MB", 8), ("peak MB", 9), ("fresh LR", 10)]
    columns += [("tflite_rt", 10)]
    notes = [
        "ms per training step (median); TF nat. = TensorFlow's own conv/pool/relu gradients "
        "(models with conv or pool only); RSS = fresh LiteRT-only trainer process after the "
        "steps; fresh LR = that process's ms/step"
    ]
    if not tflite_runtime:
        notes.append("tflite_runtime: skipped (not importable in this environment)")
    print_table(
        columns,
        [
            (
                row.model,
                cell(row.litert_ms),
                cell(row.tf_same_ms),
                cell(row.tf_native_ms),
                cell(row.litert_over_tf_same),
                cell(row.litert_over_tf_native),
                f"{row.plan_bytes:,}",
                cell(row.trainer_rss_mb, 1),
                cell(row.trainer_peak_rss_mb, 1),
                cell(row.trainer_litert_ms),
                cell(row.tflite_runtime_ms) if tflite_runtime else "skipped",
            )
            for row in rows
        ],
        notes=notes,
    )


def main() -> None:
    """Parse the options, measure every selected model, print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads")
    add_json_argument(parser)
    args = parser.parse_args()

    tflite_runtime = importlib.util.find_spec("tflite_runtime") is not None or bool(
        os.environ.get("FEDGE_TFLITE_PYTHON")
    )
    load_start = load_average()
    rows = [measure(name, args, tflite_runtime) for name in args.models.split(",")]
    print_rows(rows, tflite_runtime)
    summary = {
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "tensorflow": tf.__version__,
        "tflite_runtime": "measured" if tflite_runtime else "skipped: not importable",
        "models": {row.model: asdict(row) for row in rows},
        "load_average_start": load_start,
    }
    emit(summary, args.json)


if __name__ == "__main__":
    main()
