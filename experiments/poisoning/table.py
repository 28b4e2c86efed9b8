"""The poisoning table: attack × malicious share × defence → main-task accuracy, backdoor success.

``python -m experiments.poisoning.table --out build/poisoning`` runs, on one seed, a clean run,
then every cell of attack (scale ×10, sign flip, backdoor) × share (1, 5, 10 %) × defence (none,
clipping, zeroing on top of clipping, trimmed mean, median): 46 simulations of the real
coordinator and real LiteRT training (``fedge simulate``'s engine), ``--jobs`` at a time. It
writes ``results.json`` (every cell's figures) and ``table.md`` (docs/experiments.md's table).

The task: ``mnist_mlp`` on 100 devices with 40 IID MNIST digits each, synchronous rounds of 10
reports (no over-selection, no dropout: every difference is the attack's or the defence's),
``--rounds`` versions, uniform weighting in every cell (the robust rules need it). Clipping's C
is the clean run's mean update norm (measured first, in the same invocation): a bound honest
devices rarely meet. Zeroing is TFF's robust aggregator's rule (0.98 quantile, ×2, η = ln 10),
started at q̂ = C with no increment (TFF's q̂₀ = 10 and +1 assume norms of order 1: here the
zeroing norm would stay above 20 for the whole run, on norms of ~0.25). The trimmed
mean cuts 20 % per side (2 of a round's 10), the median is the coordinate-wise median.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import time
from pathlib import Path
from typing import Any

ATTACKS = ("scale", "sign_flip", "backdoor")
FRACTIONS = (0.01, 0.05, 0.1)
DEFENCES = ("none", "clipping", "zeroing", "trimmed_mean", "median")


def defence_settings(defence: str, clip_norm: float) -> dict[str, Any]:
    """The job's aggregation fields a defence sets (over uniform weighting)."""
    clipping = {"max_update_norm": clip_norm, "norm_policy": "clip"}
    return {
        "none": {},
        "clipping": clipping,
        # TFF's rule, started at q̂ = C without the +1: TFF's q̂₀ = 10 and +1 are sized for
        # norms of order 1 and thousands of rounds; here norms are ~0.25 and rounds few.
        "zeroing": {**clipping, "zeroing": {"initial_estimate": clip_norm, "increment": 0.0}},
        "trimmed_mean": {"robust": "trimmed_mean", "trim_fraction": 0.2},
        "median": {"robust": "median"},
    }[defence]


def cell_config(
    out: Path,
    name: str,
    *,
    seed: int,
    rounds: int,
    devices: int,
    plans_dir: Path,
    attack: dict[str, Any] | None = None,
    aggregation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A simulation config for one cell of the table (a plain dict, validated by the run)."""
    return {
        "devices": devices,
        "hours": 48.0,  # a bound: the run ends when its job makes its last version
        "mode": "sync",
        "cohort": 10,
        "rounds": rounds,
        "model": "mnist_mlp",
        "dataset": "mnist",
        "seed": seed,
        "out": str(out / name),
        "backend": "local",
        "plans_dir": str(plans_dir),
        "progress": False,
        "eval_every_minutes": 600.0,
        "fairness_devices": 10,
        "population": {"diurnal": False, "dropout": 0.0, "crash_after_upload": 0.0},
        "partition": {"scheme": "iid", "sizes": "equal", "mean_examples": 40},
        "attack": attack or {},
        "job": {
            "aggregation": {"over_selection": 1.0, "weighting": "uniform", **(aggregation or {})},
            "task": {"local_epochs": 1, "heartbeat_seconds": None},
        },
    }


def run_cell(fields: dict[str, Any]) -> dict[str, Any]:
    """Simulate one cell; its figures (accuracy, backdoor success, zeroed, mean norm, wall s)."""
    from simulator.config import SimulationConfig
    from simulator.report import summary
    from simulator.run import simulate

    started = time.perf_counter()
    # A fresh folder: the in-process coordinator would reuse a database left there, and its
    # earlier job's devices would change this run's timing.
    shutil.rmtree(fields["out"], ignore_errors=True)
    outcome = simulate(SimulationConfig.model_validate(fields))
    figures = summary(outcome)
    versions = [v for v in outcome.history["versions"] if v["version"] > 0]
    attack = figures["attack"] or {}
    return {
        "name": Path(fields["out"]).name,
        "main_task_accuracy": figures["final_accuracy"],
        "backdoor_success": attack.get("backdoor_success"),
        "zeroed": attack.get("updates_zeroed", 0),
        "versions": figures["versions"],
        "mean_update_norm": sum(v["update_norm_mean"] for v in versions) / max(1, len(versions)),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run the table and write ``results.json`` and ``table.md`` under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/poisoning"))
    parser.add_argument("--plans-dir", type=Path, default=Path("build/plans"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="simulations at a time")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--defences", nargs="+", default=list(DEFENCES), choices=DEFENCES)
    args = parser.parse_args()
    started = time.perf_counter()
    common = {
        "seed": args.seed,
        "rounds": args.rounds,
        "devices": args.devices,
        "plans_dir": args.plans_dir,
    }
    clean = run_cell(cell_config(args.out, "clean", **common))
    clip_norm = round(clean["mean_update_norm"], 3)
    print(f"clean: accuracy {clean['main_task_accuracy']:.3f}, C = {clip_norm}", flush=True)
    cells = {
        (attack, fraction, defence): cell_config(
            args.out,
            f"{attack}-{fraction:g}-{defence}",
            attack={"kind": attack, "fraction": fraction},
            aggregation=defence_settings(defence, clip_norm),
            **common,
        )
        for attack in args.attacks
        for fraction in args.fractions
        for defence in args.defences
    }
    results: dict[str, Any] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_cell, fields): key for key, fields in cells.items()}
        for future in concurrent.futures.as_completed(futures):
            figures = future.result()
            results[figures["name"]] = figures
            print(json.dumps(figures), flush=True)
    wall = time.perf_counter() - started
    report = {"clean": clean, "clip_norm": clip_norm, "wall_seconds": round(wall, 1), **common}
    report["plans_dir"] = str(args.plans_dir)
    report["cells"] = results
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown(report, args.attacks, args.fractions, args.defences)
    (args.out / "table.md").write_text(table)
    print(table)


def markdown(
    report: dict[str, Any], attacks: list[str], fractions: list[float], defences: list[str]
) -> str:
    """The table: one row per attack and share, accuracy (backdoor success) per defence."""
    clean = report["clean"]["main_task_accuracy"]
    lines = [
        f"clean run: main-task accuracy {clean:.3f}; clipping C = {report['clip_norm']}; "
        f"{len(report['cells']) + 1} runs in {report['wall_seconds'] / 60:.1f} min",
        "",
        "| attack | malicious | " + " | ".join(defences) + " |",
        "|---|---|" + "---|" * len(defences),
    ]
    for attack in attacks:
        for fraction in fractions:
            row = []
            for defence in defences:
                cell = report["cells"].get(f"{attack}-{fraction:g}-{defence}")
                if cell is None:
                    row.append("—")
                    continue
                text = f"{cell['main_task_accuracy']:.3f}"
                if cell["backdoor_success"] is not None:
                    text += f" ({cell['backdoor_success']:.2f})"
                if cell["zeroed"]:
                    text += f" z{cell['zeroed']}"
                row.append(text)
            lines.append(f"| {attack} | {fraction:.0%} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
