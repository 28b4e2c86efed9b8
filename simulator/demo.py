"""``make demo``: a coordinator on SQLite over loopback, an asynchronous job, 1,000 devices.

Starts ``fedge coordinator serve`` as its own process, runs the simulator's fleet against it in
real time (the devices' real protocol over HTTP; dropouts, slow phones and all), shows progress,
then prints the accuracy reached and where the report is. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from coordinator.served import ServedCoordinator
from simulator.config import load
from simulator.report import write
from simulator.run import simulate

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "demo.toml"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return an exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long the fleet runs")
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)
    if not args.config.is_file():
        print(
            f"simulator.demo: error: no config file at {args.config} (experiments/demo.toml "
            "ships with the repository, not the wheel): pass --config FILE",
            file=sys.stderr,
        )
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    database = args.out / "coordinator.db"
    database.unlink(missing_ok=True)
    token = secrets.token_urlsafe(24)
    server = ServedCoordinator(
        f"sqlite:///{database}",
        admin_token=token,
        log_path=args.out / "coordinator.log",
        poll_seconds=0.2,
    )
    url = server.url
    try:
        server.start()
        print(f"coordinator serving at {url} (SQLite {database}); log: {server.log_path}")
        print(f"watch it at {url}/dashboard, admin token {token} (this run's, loopback only)")
        config = load(
            args.config,
            {
                "server": url,
                "admin_token": token,
                "out": str(args.out),
                "devices": args.devices,
                "hours": args.minutes / 60.0,
            },
        )
        print(
            f"{config.devices} devices, {config.population.dropout:.0%} of tasks dropped "
            f"mid-way, asynchronous job (FedBuff), {args.minutes:g} minutes in real time"
        )
        outcome = simulate(config)
        figures = write(outcome, config.out)
    finally:
        server.stop(grace=20)
    print(
        f"\naccuracy {figures['final_accuracy']:.3f} on 1,000 held-out digits after "
        f"{figures['versions']} versions ({figures['updates_accepted']} updates accepted, "
        f"{sum(figures['tasks_dropped_by_phase'].values())} tasks lost to dropout, "
        f"{figures['updates_rejected']} refused)"
    )
    print(f"report: {(config.out / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
