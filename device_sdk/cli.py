"""``fedge device run``: the device agent's command line and its logging."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from device_sdk.agent import DEFAULT_STATE_DIR, Agent, AgentConfig
from device_sdk.eligibility import FakeProbe, LinuxProbe, Readings, TermuxProbe, detect_probe
from fedge.errors import FedgeError
from fedge.logs import JsonFormatter
from fedge.options import OneLineParser, add_log_level, fail, from_env, log_level, subcommands

log = logging.getLogger("fedge.device")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``device run`` to the ``fedge`` command's subcommands."""
    device = commands.add_parser("device", help="the on-device agent")
    device_commands = device.add_subparsers(dest="device_command", required=True)
    agent = device_commands.add_parser(
        "run",
        help="register once, then check in, train when eligible and upload, repeatedly",
        epilog="Exit status: 0 when it ends (--max-tasks, SIGTERM, Ctrl-C) having uploaded, or "
        "having run no task; 1 when every task it ran failed (none uploaded: a plan the "
        "runtime cannot load, training that diverges, refused uploads); 2 for a bad argument "
        "or an example store or state directory it cannot use.",
    )
    server = from_env("FEDGE_SERVER")
    agent.add_argument(
        "--server",
        default=server,
        required=server is None,
        help="coordinator URL, e.g. http://coordinator:8000 (default FEDGE_SERVER)",
    )
    agent.add_argument(
        "--data",
        required=True,
        help="example store: a SQLite file, a directory with examples.db, or of .npz shards",
    )
    agent.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help=f"default {DEFAULT_STATE_DIR}"
    )
    agent.add_argument("--max-tasks", type=_positive(int), help="end after this many tasks")
    agent.add_argument(
        "--max-examples", type=_positive(int), help="train on at most the newest N examples"
    )
    agent.add_argument(
        "--task-budget",
        type=_positive(float),
        default=900.0,
        help="seconds a task may take (default 900)",
    )
    agent.add_argument(
        "--probe",
        choices=["auto", "linux", "termux", "none"],
        default="auto",
        help="how eligibility is read; none: a dedicated device, always eligible",
    )
    agent.add_argument("--metered", action="store_true", help="the connection is metered")
    agent.add_argument("--allow-metered", action="store_true", help="train on a metered connection")
    agent.add_argument("--seed", type=int, help="seed of jitter and shuffling")
    add_log_level(agent, default="info")
    agent.add_argument("--log-format", choices=["text", "json"], default="text")
    agent.set_defaults(run=run_from_args)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def run_from_args(args: argparse.Namespace) -> int:
    """``fedge device run``: run the agent until it ends or SIGTERM/SIGINT stops it.

    Returns 1 when every task it ran failed (:meth:`Agent.every_task_failed`), else 0.
    """
    _configure_logging(log_level(args), args.log_format)
    probe: FakeProbe | LinuxProbe | TermuxProbe
    if args.probe == "none":
        probe = FakeProbe(Readings(charging=True, unmetered=not args.metered))
    elif args.probe == "linux":
        probe = LinuxProbe(metered=args.metered)
    elif args.probe == "termux":
        probe = TermuxProbe(metered=args.metered)
    else:
        probe = detect_probe(metered=args.metered)
    # Each probe's own default policy (Termux's throttles cooler), metered or not.
    probe.policy = replace(probe.policy, allow_metered=args.allow_metered)
    try:
        config = AgentConfig(
            server_url=args.server,
            state_dir=Path(args.state_dir).expanduser(),
            data=Path(args.data),
            probe=probe,
            task_budget_s=args.task_budget,
            max_tasks=args.max_tasks,
            max_examples=args.max_examples,
            seed=args.seed,
            probe_label=args.probe if args.probe != "auto" else f"auto: {_probe_name(probe)}",
            ineligible_hint="" if args.probe == "none" else "use --probe none on a test box",
        )
    except ValueError as bad:
        return fail("fedge device run", str(bad))
    agent = Agent(config)
    stop_signals = (signal.SIGTERM, signal.SIGINT)

    def stop(*_: object) -> None:
        # From a thread: Event.set inside a handler could meet its own lock, held by wait().
        threading.Thread(target=agent.stop).start()

    previous = {sig: signal.signal(sig, stop) for sig in stop_signals}
    try:
        stats = agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info(
        "%d tasks: %d uploads accepted, %d refused, %d aborted",
        stats.tasks,
        stats.uploads_accepted,
        stats.uploads_refused,
        stats.aborts,
    )
    if agent.every_task_failed():
        log.error("every task failed (%d): exiting with status 1", stats.tasks)
        return 1
    return 0


def _probe_name(probe: FakeProbe | LinuxProbe | TermuxProbe) -> str:
    """The ``--probe`` choice a detected probe stands for."""
    return type(probe).__name__.removesuffix("Probe").lower()


def _configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if form == "json"
        else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m device_sdk.cli device run …``, for a device without the ``fedge`` script."""
    parser = OneLineParser(prog="fedge")
    add_commands(subcommands(parser, "command"))
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (FedgeError, OSError) as exc:
        print(f"fedge: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
