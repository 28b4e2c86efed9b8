"""Device SDK: what runs on a device. numpy + a TFLite runtime (LiteRT or tflite-runtime).

It never imports TensorFlow, FastAPI or SQLAlchemy (import-linter enforces it).
"""

from device_sdk.errors import DeviceError, PlanError, RuntimeUnavailableError, TrainingError
from device_sdk.plan_runner import EvalResult, PlanRunner
from device_sdk.runtime import available_runtimes, load_interpreter_class
from device_sdk.trainer import TrainResult, evaluate, train_locally

__all__ = [
    "DeviceError",
    "EvalResult",
    "PlanError",
    "PlanRunner",
    "RuntimeUnavailableError",
    "TrainResult",
    "TrainingError",
    "available_runtimes",
    "evaluate",
    "load_interpreter_class",
    "train_locally",
]
