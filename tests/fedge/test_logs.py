"""The filter on native chatter: TensorFlow's and LiteRT's start-up lines go, errors stay."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.logs import native_chatter_dropped

ROOT = Path(__file__).resolve().parents[2]
CHATTER = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796279627.943349   19252 port.cc:153] oneDNN custom operations are on.\n"
    b"W0000 00:00:1796279636.777180   19252 tf_tfl_flatbuffer_helpers.cc:364] Ignored.\n"
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
)


@pytest.fixture
def root_at(request):
    root = logging.getLogger()
    before = root.level
    root.setLevel(request.param)
    yield
    root.setLevel(before)


@pytest.mark.parametrize("root_at", [logging.WARNING], indirect=True)
def test_start_up_chatter_is_dropped_and_everything_else_passes(capfd, root_at):
    with native_chatter_dropped():
        os.write(2, CHATTER)
        os.write(2, b"E0000 00:00:1.0 1 kernel.cc:1] a real error\n")
        print("a Python line", file=sys.stderr)

    # (under pytest, Python's sys.stderr is captured apart from file descriptor 2)
    assert sorted(capfd.readouterr().err.splitlines()) == [
        "E0000 00:00:1.0 1 kernel.cc:1] a real error",
        "a Python line",
    ]


@pytest.mark.parametrize("root_at", [logging.DEBUG], indirect=True)
def test_at_debug_nothing_is_held_or_dropped(capfd, root_at):
    with native_chatter_dropped():
        os.write(2, CHATTER)

    assert capfd.readouterr().err == CHATTER.decode()


@pytest.mark.parametrize("root_at", [logging.WARNING], indirect=True)
def test_what_was_held_is_written_back_when_the_block_raises(capfd, root_at):
    with pytest.raises(ValueError), native_chatter_dropped():
        os.write(2, b"why it failed\n")
        raise ValueError

    assert capfd.readouterr().err == "why it failed\n"


def test_loading_a_plan_prints_nothing(plans_dir):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from device_sdk import PlanRunner\n"
        "PlanRunner.from_files(Path(sys.argv[1]))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(plans_dir / "synthetic_logreg.tflite")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )

    assert done.stderr == ""
