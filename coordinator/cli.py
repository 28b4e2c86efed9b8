"""``fedge coordinator serve`` and ``fedge admin``; the server stack is imported only to serve.

``fedge admin`` needs only httpx (``coordinator.admin_client``), so an operator's laptop runs it
without the server extra.
"""

from __future__ import annotations

import argparse
import os

from fedge.options import add_log_level, log_level


def _admin(args: argparse.Namespace) -> int:
    from coordinator.admin_cli import run

    return run(args)


def _coordinator_serve(args: argparse.Namespace) -> int:
    import logging.config

    import uvicorn

    # One BLAS thread per worker: requests already run in parallel, and a threaded OpenBLAS
    # dot had a long latency tail on a busy 2-core host (benchmarks/coordinator_load.py).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Flags become FEDGE_* variables: each worker process builds its Settings from them, and
    # a flag left out leaves the variable the operator set (FEDGE_HOST, FEDGE_PORT...) in force.
    for flag, variable in (
        ("db", "FEDGE_DB_URL"),
        ("admin_token", "FEDGE_ADMIN_TOKEN"),
        ("host", "FEDGE_HOST"),
        ("port", "FEDGE_PORT"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = str(value)
    level = log_level(args)
    # One line per request only when asked: --access-log, or everything at debug.
    access_log = args.access_log or level == "debug"
    formatter = (
        {"()": "coordinator.observability.JsonFormatter"}
        if args.log_format == "json"
        else {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}
    )
    log_config = {  # applied in every worker process
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn.access": {"level": "INFO" if access_log else "WARNING"},
            # Alembic's plugin, "Context impl" and "Running upgrade" lines: debug only.
            "alembic": {"level": "DEBUG" if level == "debug" else "WARNING"},
        },
    }
    logging.config.dictConfig(log_config)
    from coordinator.settings import prepare_serve_environment

    # One admin token for every worker; bad settings (FEDGE_PORT=abc...) stop here, one line.
    settings = prepare_serve_environment()
    if args.workers > 1:
        _migrate_before_fork()
    uvicorn.run(
        "coordinator.api.main:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        log_level=level,
        log_config=log_config,
        access_log=access_log,
    )
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``coordinator serve`` and ``admin …`` to the ``fedge`` command's subcommands."""
    coordinator = commands.add_parser("coordinator", help="the coordinator service")
    coordinator_commands = coordinator.add_subparsers(dest="coordinator_command", required=True)
    serve = coordinator_commands.add_parser("serve", help="serve the device and admin APIs")
    serve.add_argument("--db", help="SQLAlchemy URL (default sqlite:///fedge.db, or FEDGE_DB_URL)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, or FEDGE_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or FEDGE_PORT)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--admin-token", help="admin API token (or FEDGE_ADMIN_TOKEN)")
    add_log_level(serve, default="info")
    serve.add_argument(
        "--access-log", action="store_true", help="a line per request (also at --log-level debug)"
    )
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.set_defaults(run=_coordinator_serve)
    migrate = coordinator_commands.add_parser("migrate", help="create or upgrade the schema, exit")
    migrate.add_argument("--db", help="SQLAlchemy URL (or FEDGE_DB_URL)")
    migrate.set_defaults(run=_coordinator_migrate)

    admin = commands.add_parser(
        "admin",
        help="admin API: plans, jobs, devices, versions, downloads, metrics",
        epilog="--server, --token and --json go before or after the subcommand.",
    )
    _admin_options(admin, default=True)
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parser = admin_commands.add_parser(name, help=text)
        _admin_options(parser, default=False)
        return parser

    publish = command("publish-plan", "upload DIR/NAME.tflite + manifest")
    publish.add_argument("plan")
    create = command("create-job", "create a training job")
    create.add_argument("--plan-id", type=int)
    create.add_argument("--name", default="job")
    create.add_argument("--mode", choices=["async", "sync"], default="async")
    create.add_argument("--config", help="JSON file shaped like the JobCreate schema")
    command("jobs", "every job: status and current version")
    command("plans", "every registered plan")
    devices = command("devices", "the devices seen most recently, and how many are registered")
    devices.add_argument("--limit", type=int, default=50, help="most devices listed (default 50)")
    for action, text in (
        ("pause", "pause a job"),
        ("resume", "resume a paused job"),
        ("stop", "stop a job for good"),
        ("versions", "a job's versions"),
        ("metrics", "a job's metrics history (JSON)"),
    ):
        command(action, text).add_argument("job", type=int)
    download = command(
        "download", "save a version's inference model (.tflite) or, with --weights, its weights"
    )
    download.add_argument("job", type=int)
    download.add_argument("version", type=int)
    download.add_argument("--weights", action="store_true", help="the weights (wire format)")
    download.add_argument("--out", help="file to write (default jobJ-vV.tflite or .weights)")
    promote = command("promote", "move a version forward in the registry (canary, then live)")
    promote.add_argument("job", type=int)
    promote.add_argument("version", type=int)
    promote.add_argument("--to", choices=["canary", "live"], help="default: the next stage")
    promote.add_argument("--reason", default="", help="why, for the stage history")
    rollback = command("rollback", "retire the canary or live version; the one before goes live")
    rollback.add_argument("job", type=int)
    rollback.add_argument("--reason", default="", help="why, for the stage history")
    command("registry", "a job's versions: stage, lineage, federated evaluation").add_argument(
        "job", type=int
    )
    admin.set_defaults(run=_admin)


def _coordinator_migrate(args: argparse.Namespace) -> int:
    """``fedge coordinator migrate``: the upgrade every start does, alone (a Kubernetes Job)."""
    if args.db is not None:
        os.environ["FEDGE_DB_URL"] = args.db
    _migrate_before_fork()
    return 0


def _admin_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """--server, --token and --json, on ``admin`` (with defaults) and each of its subcommands.

    On a subcommand they default to nothing (``SUPPRESS``), so a value given before the
    subcommand is not overwritten by the subcommand's default.
    """

    def given(value: object) -> object:
        return value if default else argparse.SUPPRESS

    parser.add_argument(
        "--server",
        default=given(os.environ.get("FEDGE_SERVER") or "http://127.0.0.1:8000"),
        help="coordinator URL (default FEDGE_SERVER, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token", default=given(None), help="admin token (default FEDGE_ADMIN_TOKEN)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=given(False),
        help="print the API's JSON (times as Unix seconds) instead of a table",
    )


def _migrate_before_fork() -> None:
    """Create or upgrade the database once, before uvicorn forks its workers.

    Workers opening a fresh SQLite file together race to switch it to WAL, and the loser's
    start-up fails with "database is locked" (uvicorn then stops them all); once the schema
    exists in WAL mode each worker's own upgrade is a no-op.
    """
    from coordinator.db.migrate import upgrade
    from coordinator.db.session import make_engine
    from coordinator.settings import Settings

    engine = make_engine(Settings().db_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
