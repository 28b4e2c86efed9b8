"""``fedge simulate`` and ``python -m simulator.demo`` as processes: one-line errors, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def fedge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedge.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=120,
    )


def test_a_set_without_an_equals_sign_is_one_line(tmp_path):
    done = fedge(tmp_path, "simulate", "--set", "foo")

    assert done.returncode == 2
    assert done.stderr == "fedge simulate: error: --set: expected KEY=VALUE, got 'foo'\n"


def test_a_dirichlet_split_that_cannot_be_made_is_one_line(tmp_path, plans_dir):
    done = fedge(
        tmp_path,
        "simulate",
        "--devices", "100",
        "--partition", "dirichlet",
        "--alpha", "0.05",
        "--set", "partition.mean_examples=40",
        "--set", f"plans_dir={plans_dir}",
        "--no-plots",
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("fedge: error: no Dirichlet(alpha=0.05) split of 4000 examples")


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unknown_log_level_is_one_line_before_or_after_the_subcommand(tmp_path, where):
    flag = ["--log-level", "verbose"]
    done = (
        fedge(tmp_path, *flag, "simulate")
        if where == "before"
        else fedge(tmp_path, "simulate", *flag)
    )

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "argument --log-level: invalid choice: 'verbose'" in done.stderr


def test_the_demo_without_its_config_says_where_it_looked_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "simulator.demo", "--config", str(tmp_path / "demo.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=120,
    )

    assert done.returncode == 2
    assert done.stderr == (
        f"simulator.demo: error: no config file at {tmp_path / 'demo.toml'} "
        "(experiments/demo.toml ships with the repository, not the wheel): pass --config FILE\n"
    )


@pytest.mark.slow
def test_ctrl_c_stops_a_simulation_cleanly_with_a_partial_report(tmp_path, plans_dir):
    command = [
        *(sys.executable, "-m", "fedge.cli", "simulate", "--log-level", "info"),
        *("--devices", "40", "--hours", "500", "--backend", "local", "--no-progress"),
        *("--no-plots", "--out", str(tmp_path / "out"), "--set", f"plans_dir={plans_dir}"),
        *("--set", "fairness_devices=10"),
    ]
    run = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert run.stderr is not None
    seen = []
    for line in run.stderr:  # wait until the devices run
        seen.append(line)
        if "virtual hours: running" in line:
            break
    time.sleep(1.0)  # into the event loop (a Ctrl-C before it exits 130 with no report)
    run.send_signal(signal.SIGINT)
    out, rest = run.communicate(timeout=120)
    err = "".join(seen) + rest

    assert run.returncode == 130, err
    assert "Traceback" not in err
    assert out.startswith("interrupted: 40 devices"), err
    assert "partial report in" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["virtual_hours"] < 500
