"""Errors raised on a device.

FedgeError (fedge.errors)
└── DeviceError
    ├── RuntimeUnavailableError   no TFLite runtime importable
    ├── PlanError                 a plan or manifest that cannot be run, or wrong inputs to it
    ├── ProtocolError             the coordinator refused a request or answered nonsense
    └── TrainingError             local training diverged (non-finite loss or weights)
"""

from fedge.errors import FedgeError


class DeviceError(FedgeError):
    """Root of errors raised by the device SDK."""


class RuntimeUnavailableError(DeviceError, ImportError):
    """Neither ``ai-edge-litert`` nor ``tflite-runtime`` can be imported."""


class PlanError(DeviceError, ValueError):
    """A plan that cannot be loaded or driven, or inputs that do not fit it."""


class ProtocolError(DeviceError):
    """The coordinator refused a request (4xx/5xx) or answered something unreadable.

    ``reason`` is the answer's machine-readable ``error`` (:class:`fedge.protocol.Reason`).
    """

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class TrainingError(DeviceError):
    """Local training produced a non-finite loss or weights; no update should be sent."""
