"""Find the TFLite interpreter to run plans with: LiteRT first, then tflite-runtime.

``FEDGE_TFLITE_RUNTIME`` (``ai_edge_litert`` or ``tflite_runtime``) forces one, for tests and
for boards where both are installed.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from device_sdk.errors import RuntimeUnavailableError

RUNTIMES: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime")
_ENV = "FEDGE_TFLITE_RUNTIME"


def available_runtimes() -> list[str]:
    """The runtimes importable here, in order of preference."""
    found = []
    for name in RUNTIMES:
        try:
            importlib.import_module(f"{name}.interpreter")
        except ImportError:
            continue
        found.append(name)
    return found


def load_interpreter_class(runtime: str | None = None) -> tuple[str, Any]:
    """Return ``(runtime name, Interpreter class)`` for ``runtime`` or the first available one."""
    wanted = runtime or os.environ.get(_ENV) or None
    candidates = (wanted,) if wanted else RUNTIMES
    errors = []
    for name in candidates:
        if name not in RUNTIMES:
            raise RuntimeUnavailableError(f"unknown TFLite runtime {name!r}; use one of {RUNTIMES}")
        try:
            module = importlib.import_module(f"{name}.interpreter")
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return name, module.Interpreter
    raise RuntimeUnavailableError(
        "no TFLite runtime could be imported ("
        + "; ".join(errors)
        + "). Install one: pip install 'fedge[device]' (ai-edge-litert), "
        "or tflite-runtime==2.14.0 with numpy<2."
    )
