"""Errors of the plan exporter.

FedgeError (fedge.errors)
└── ExportError          a model that cannot become a plan
    └── FlexOpsError     the graph needs Flex (Select TF) ops, named in the message
"""

from __future__ import annotations

from fedge.errors import FedgeError


class ExportError(FedgeError):
    """A model that cannot be exported as a training plan."""


class FlexOpsError(ExportError):
    """The converted graph would need Flex (Select TF) ops, which no device runtime carries."""

    def __init__(self, plan: str, ops: list[str]) -> None:
        self.plan = plan
        self.ops = ops
        super().__init__(
            f"plan {plan!r} needs Flex (Select TF) ops, which ai-edge-litert and tflite-runtime "
            f"cannot run: {', '.join(ops)}. Rewrite them with builtins-only formulations "
            "(see models/ops.py and shared/notes/tflite-on-device-training.md)."
        )
