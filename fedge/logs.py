"""The one JSON log formatter of Fedge's processes, and the filter on native libraries' chatter."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

# What TensorFlow and LiteRT print straight to file descriptor 2 on every start, past Python's
# logging and TF_CPP_MIN_LOG_LEVEL: absl's info and warning lines from before its logging is set
# up (oneDNN, CPU features, SavedModel loading), and LiteRT's one XNNPACK line. Errors ("E…")
# and anything else pass.
NATIVE_CHATTER = re.compile(
    rb"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog|"
    rb"INFO: Created TensorFlow Lite XNNPACK delegate|To enable the following instructions)"
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


@contextlib.contextmanager
def native_chatter_dropped() -> Iterator[None]:
    """Hold what is written to file descriptor 2 meanwhile, then pass on all but the chatter.

    The held lines (Python's own stderr included: a traceback still shows) are written back
    when the block ends, minus the lines :data:`NATIVE_CHATTER` matches; at ``--log-level
    debug`` (the root logger at DEBUG) nothing is held or dropped.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.readlines() if not NATIVE_CHATTER.match(line)]
            if kept:
                os.write(2, b"".join(kept))
