"""``fedge coordinator serve`` and ``fedge admin``; the server stack is imported only to serve.

``fedge admin`` needs only httpx (``fedge.admin_client``), so an operator's laptop runs it
without the server extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fedge.options import add_log_level, log_level


def _admin(args: argparse.Namespace) -> int:
    from fedge.admin_client import AdminClient

    token = args.token or os.environ.get("FEDGE_ADMIN_TOKEN")
    if not token:
        print("fedge: error: pass --token or set FEDGE_ADMIN_TOKEN", file=sys.stderr)
        return 2
    with AdminClient(args.server, token) as admin:
        if args.admin_command == "publish-plan":
            result: object = admin.publish_plan(Path(args.plan))
        elif args.admin_command == "create-job":
            config = json.loads(Path(args.config).read_text()) if args.config else {}
            config.setdefault("name", args.name)
            if args.plan_id is not None:
                config["plan_id"] = args.plan_id
            aggregation = config.setdefault("aggregation", {})
            aggregation.setdefault("mode", args.mode)
            result = admin.create_job(config)
        elif args.admin_command in ("pause", "resume", "stop"):
            result = admin.change_status(args.job, args.admin_command)
        elif args.admin_command == "versions":
            result = admin.versions(args.job)
        else:
            result = admin.metrics(args.job)
    print(json.dumps(result, indent=2))
    return 0


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

    admin = commands.add_parser("admin", help="admin API: plans, jobs, versions, metrics")
    admin.add_argument("--server", default="http://127.0.0.1:8000")
    admin.add_argument("--token", help="admin token (or FEDGE_ADMIN_TOKEN)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    publish = admin_commands.add_parser("publish-plan", help="upload DIR/NAME.tflite + manifest")
    publish.add_argument("plan")
    create = admin_commands.add_parser("create-job", help="create a training job")
    create.add_argument("--plan-id", type=int)
    create.add_argument("--name", default="job")
    create.add_argument("--mode", choices=["async", "sync"], default="async")
    create.add_argument("--config", help="JSON file shaped like the JobCreate schema")
    for action in ("pause", "resume", "stop", "versions", "metrics"):
        command = admin_commands.add_parser(action, help=f"{action} of a job")
        command.add_argument("job", type=int)
    admin.set_defaults(run=_admin)


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
