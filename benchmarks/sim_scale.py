"""How the simulator scales: device updates per second and peak RSS at 1k, 10k and 100k devices.

Each size runs ``fedge simulate`` in its own process (so peak RSS is its own) on the default
population and job for ``--hours`` virtual hours, with first check-ins spread over the day as
devices of a real fleet come online at different times. Beside each run, the floor: the time
LiteRT alone needs for the same number of local trainings (``train_locally`` on devices drawn
from the same population, timed in this process), so the ratio says what the real coordinator,
the protocol and the event loop cost on top of the compute. ``--population 1000000`` adds the
million-device run (registration in bulk, then one virtual hour).

Run: ``.venv/bin/python -m benchmarks.sim_scale [--sizes 1000 10000 100000] [--hours 6]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT, add_json_argument, emit, fedge_command, ratio
from device_sdk.plan_runner import PlanRunner
from device_sdk.trainer import train_locally
from fedge.manifest import HyperParameters, PlanManifest, manifest_path_for
from simulator.config import SimulationConfig
from simulator.device_data import DeviceData
from simulator.run import ensure_plan


def run_size(devices: int, hours: float, out: Path, extra: list[str]) -> dict[str, float]:
    """One ``fedge simulate`` process; its summary."""
    command = fedge_command(
        "simulate",
        "--devices",
        str(devices),
        "--hours",
        str(hours),
        "--dropout",
        "0.3",
        "--out",
        str(out),
        "--no-plots",
        "--no-progress",
        "--set",
        "first_check_in_minutes=1440",
        *extra,
    )
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    summary: dict[str, float] = json.loads((out / "summary.json").read_text())
    summary["process_seconds"] = time.perf_counter() - started
    return summary


def training_floor(samples: int = 200) -> float:
    """Mean seconds of one local training on the default plan, data sizes and epochs."""
    config = SimulationConfig()
    plan = ensure_plan(config)  # exported on first use, as ``fedge simulate`` does
    manifest = PlanManifest.from_json(manifest_path_for(plan).read_text())
    runner = PlanRunner(plan.read_bytes(), manifest, num_threads=1)
    data = DeviceData(config.dataset, 10_000, config.partition, seed=0)
    hp = manifest.hparams
    epochs = config.job_config(1).task.local_epochs or hp.local_epochs  # unset: the plan's
    local = HyperParameters(
        local_epochs=epochs,
        batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        momentum=hp.momentum,
    )
    weights = runner.get_weights()
    rng = np.random.default_rng(0)
    devices = rng.choice(10_000, size=samples, replace=False)
    started = time.perf_counter()
    for device in devices:
        x, y = data.examples(int(device))
        train_locally(runner, base_weights=weights, x=x, y=y, hparams=local, rng=rng)
    return (time.perf_counter() - started) / samples


def main() -> int:
    """Run the sizes, print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--population", type=int, default=0, help="also a run of this many")
    add_json_argument(parser)
    args = parser.parse_args()

    per_training = training_floor()
    print(f"floor: {per_training * 1000:.2f} ms per local training (LiteRT alone)")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = [(n, args.hours) for n in args.sizes]
        if args.population:
            runs.append((args.population, 1.0))
        for devices, hours in runs:
            summary = run_size(devices, hours, Path(scratch) / str(devices), [])
            trainings = float(summary["trainings"])
            floor = trainings * per_training
            row = {
                "devices": devices,
                "virtual_hours": hours,
                "wall_seconds": summary["wall_seconds"],
                "process_seconds": round(summary["process_seconds"], 1),
                "check_ins": summary["check_ins"],
                "trainings": trainings,
                "updates_accepted": summary["updates_accepted"],
                "updates_per_second": summary["updates_accepted"] / summary["wall_seconds"],
                "peak_rss_mb": summary["peak_rss_mb"],
                "population_bytes_per_device": summary["population_bytes_per_device"],
                "floor_seconds": floor,
                "wall_over_floor": ratio(summary["wall_seconds"], floor),
            }
            results.append(row)
            print(
                f"{devices:>9,} devices {hours:>4g} h: {row['wall_seconds']:7.1f} s wall, "
                f"{row['check_ins']:>7,} check-ins, {trainings:>6,.0f} trainings, "
                f"{row['updates_per_second']:6.1f} updates/s, peak RSS {row['peak_rss_mb']:6.0f} MB"
                f", {row['population_bytes_per_device']:.0f} B/device; LiteRT floor "
                f"{floor:6.1f} s -> x{row['wall_over_floor'] or float('nan'):.1f}",
                flush=True,
            )
    emit({"floor_ms_per_training": per_training * 1000, "runs": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
