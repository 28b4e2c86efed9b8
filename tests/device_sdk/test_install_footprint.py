"""What a board installs: ``fedge[device]`` pulls no TensorFlow and no server stack, and runs.

The last test is the issue's acceptance check itself: ``pip install "fedge[device]"`` into a
clean venv (non-editable, from a copy of the work tree, ``-c constraints.txt``; PyPI or a warm
pip cache needed) gives a working ``fedge device run`` and ``fedge --help`` with none of those
distributions, and ``fedge coordinator serve`` there says in one line to install the server extra.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from device_sdk.footprint import FORBIDDEN_DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = FORBIDDEN_DISTRIBUTIONS
SERVER_MODULES = ["tensorflow", "keras", "fastapi", "starlette", "uvicorn", "sqlalchemy"]
SERVER_MODULES += ["alembic", "psycopg", "pydantic"]
# The rooms a device does not run: `fedge` may load their package and cli module, nothing more.
OTHER_ROOMS = ["coordinator", "simulator", "models"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_device_extra_and_base_dependencies_name_no_tensorflow_or_server_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    names = {
        requirement_name(r)
        for r in project["dependencies"] + project["optional-dependencies"]["device"]
    }

    assert names & FORBIDDEN == set()
    assert {"ai-edge-litert", "httpx", "numpy"} <= names


def test_fedge_device_run_loads_no_tensorflow_or_server_module(tmp_path):
    code = (
        "import json, sys, fedge.cli\n"
        "fedge.cli.build_parser().parse_args(['device', 'run', '--server', 'http://x', "
        "'--data', 'd'])\n"
        "print(json.dumps(sorted(sys.modules)))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )

    loaded = set(json.loads(done.stdout))
    assert {m.split(".")[0] for m in loaded} & set(SERVER_MODULES) == set()
    rooms_loaded = {m for m in loaded if m.split(".")[0] in OTHER_ROOMS}
    assert rooms_loaded <= {f"{room}{tail}" for room in OTHER_ROOMS for tail in ("", ".cli")}


@pytest.mark.slow
def test_clean_install_of_the_device_extra_runs_the_agent_without_tensorflow(tmp_path):
    source = tmp_path / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        relative = Path(os.fsdecode(name))
        if (ROOT / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, source / relative)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [python, "-m", "pip", "--disable-pip-version-check"]

    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(ROOT / "constraints.txt"), f"{source}[device]"],
        check=True,
        env=env,
    )

    listing = subprocess.run(
        [*pip, "list", "--format", "json"], capture_output=True, text=True, check=True, env=env
    )
    installed = {d["name"].lower().replace("_", "-") for d in json.loads(listing.stdout)}
    assert installed & FORBIDDEN == set()
    assert {"fedge", "ai-edge-litert", "httpx", "numpy"} <= installed
    usage = subprocess.run(
        [str(venv / "bin" / "fedge"), "device", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert "--server" in usage.stdout
    overview = subprocess.run(
        [str(venv / "bin" / "fedge"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert {"device", "coordinator", "admin", "models", "simulate"} <= set(overview.stdout.split())
    serve = subprocess.run(
        [str(venv / "bin" / "fedge"), "coordinator", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert serve.returncode == 2
    assert serve.stderr.strip().splitlines()[-1].endswith('pip install "fedge[server]"')
    assert "Traceback" not in serve.stderr
    code = "import sys, device_sdk.agent; print(device_sdk.agent.__file__)"
    where = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    )
    assert where.stdout.startswith(str(venv))  # the installed copy, not this work tree
