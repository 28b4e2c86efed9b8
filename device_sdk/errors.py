"""Errors raised on a device.

FedgeError (fedge.errors)
└── DeviceError
    ├── RuntimeUnavailableError   no TFLite runtime importable
    ├── PlanError                 a plan or manifest that cannot be run, or wrong inputs to it
    └── TrainingError             local training diverged (non-finite loss or weights)
"""

from fedge.errors import FedgeError


class DeviceError(FedgeError):
    """Root of errors raised by the device SDK."""


class RuntimeUnavailableError(DeviceError, ImportError):
    """Neither ``ai-edge-litert`` nor ``tflite-runtime`` can be imported."""


class PlanError(DeviceError, ValueError):
    """A plan that cannot be loaded or driven, or inputs that do not fit it."""


class TrainingError(DeviceError):
    """Local training produced a non-finite loss or weights; no update should be sent."""
