"""The ``fedge`` command line: one console script, a subcommand per job.

Each subcommand imports only what it needs, so ``fedge train`` runs where TensorFlow is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fedge.errors import FedgeError


def _models_list(_: argparse.Namespace) -> int:
    from models.zoo import ZOO

    for spec in ZOO.values():
        print(f"{spec.name:18} {spec.description}")
    return 0


def _models_export(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.export import export_plan

    exported = export_plan(args.name, Path(args.out), seed=args.seed)
    manifest = exported.manifest
    print(
        f"wrote {exported.plan_path} ({manifest.plan_bytes:,} bytes, sha256 {manifest.plan_sha256})"
    )
    print(f"wrote {exported.manifest_path} ({manifest.num_params:,} parameters)")
    print(f"wrote {exported.weights_path} (initial weights)")
    print(f"wrote {exported.inference_path} (inference-only template)")
    return 0


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from device_sdk import LocalTrainingConfig, PlanRunner, evaluate, train_locally
    from fedge.wire import decode_vector
    from simulator import datasets

    plan_path = Path(args.plan)
    runner = PlanRunner.from_files(plan_path, num_threads=args.threads)
    manifest = runner.manifest
    weights = decode_vector(
        (plan_path.parent / manifest.initial_weights_file).read_bytes(),
        expected_length=manifest.num_params,
    )
    rng = np.random.default_rng(args.seed)
    train, test = datasets.train_test_split(
        datasets.load(args.dataset), test_size=args.test_size, rng=rng
    )
    hp = manifest.hparams
    config = LocalTrainingConfig(
        epochs=1,
        batch_size=args.batch_size or hp.batch_size,
        learning_rate=args.learning_rate if args.learning_rate is not None else hp.learning_rate,
        momentum=args.momentum if args.momentum is not None else hp.momentum,
    )
    print(
        f"training {manifest.name} on-device ({runner.runtime}) on {args.dataset}: "
        f"{len(train)} train / {len(test)} test examples, {args.epochs} epochs, "
        f"batch {config.batch_size}, lr {config.learning_rate}, momentum {config.momentum}"
    )
    history = []
    for epoch in range(1, args.epochs + 1):
        result = train_locally(
            runner, base_weights=weights, x=train.x, y=train.y, config=config, rng=rng
        )
        weights = weights + result.delta
        runner.set_weights(weights)
        ev = evaluate(runner, test.x, test.y)
        seconds = result.metrics["seconds"]
        history.append({"epoch": epoch, "test_accuracy": ev.accuracy, "seconds": seconds})
        print(
            f"epoch {epoch}: train loss {result.metrics['train_loss']:.4f}  "
            f"test loss {ev.loss:.4f}  test accuracy {ev.accuracy:.4f}  ({seconds:.1f} s)"
        )
    print(f"test accuracy: {history[-1]['test_accuracy']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"plan": manifest.name, "history": history}))
    return 0


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
    # Flags become FEDGE_* variables: each worker process builds its Settings from them.
    for flag, variable in (("db", "FEDGE_DB_URL"), ("admin_token", "FEDGE_ADMIN_TOKEN")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[variable] = value
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
        "root": {"handlers": ["stderr"], "level": args.log_level.upper()},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }
    logging.config.dictConfig(log_config)
    from coordinator.settings import prepare_serve_environment

    prepare_serve_environment()  # one admin token for every worker; bad settings stop here
    uvicorn.run(
        "coordinator.api.main:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config,
    )
    return 0


# Flags of `fedge simulate` and the config field each one sets.
_SIMULATE_FLAGS: dict[str, tuple[str, type, str]] = {
    "devices": ("devices", int, "registered devices (default 1,000)"),
    "dropout": ("population.dropout", float, "chance a device drops mid-task (default 0.1)"),
    "hours": ("hours", float, "virtual duration in hours (default 24)"),
    "mode": ("mode", str, "async (FedBuff) or sync (FedAvg rounds)"),
    "model": ("model", str, "zoo model to train (default mnist_mlp)"),
    "dataset": ("dataset", str, "mnist, digits, synthetic_A_B, synthetic_iid"),
    "partition": ("partition.scheme", str, "iid, dirichlet or shards"),
    "alpha": ("partition.alpha", float, "Dirichlet alpha of the label skew"),
    "sizes": ("partition.sizes", str, "equal or power_law example counts"),
    "seed": ("seed", int, "seed of everything (same seed, same result)"),
    "out": ("out", str, "report folder (default sim-out)"),
    "backend": ("backend", str, "where training runs: local, process or ray"),
    "workers": ("workers", int, "training processes (default: one per core)"),
    "server": ("server", str, "a live coordinator URL instead of the in-process one"),
    "admin_token": ("admin_token", str, "admin token of the live coordinator"),
    "rounds": ("rounds", int, "stop after this many global versions"),
    "cohort": ("cohort", int, "sync mode: reports that close a round"),
    "target_accuracy": ("target_accuracy", float, "accuracy whose time-to is reported"),
}


def _simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from simulator import config as sim_config
    from simulator.report import write
    from simulator.run import simulate

    overrides = dict(sim_config.parse_assignment(text) for text in args.set or [])
    for flag, (field, _, _) in _SIMULATE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if args.no_progress:
        overrides["progress"] = False
    try:
        config = sim_config.load(Path(args.config) if args.config else None, overrides)
    except (ValidationError, ValueError) as exc:
        print(f"fedge: error: invalid simulation config: {exc}", file=sys.stderr)
        return 2
    outcome = simulate(config)
    figures = write(outcome, config.out, plots=not args.no_plots)
    print(
        f"{figures['devices']} devices, {figures['virtual_hours']:.2f} virtual hours in "
        f"{figures['wall_seconds']:.1f} s: {figures['versions']} versions, "
        f"{figures['updates_accepted']} updates accepted, final accuracy "
        f"{figures['final_accuracy']:.4f} (worst 10% of devices "
        f"{figures['worst10_accuracy']:.4f}); report in {config.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedge`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="fedge", description="Fedge: federated learning for fleets of edge devices."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="the model zoo and its training plans")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    models_commands.add_parser("list", help="list zoo models").set_defaults(run=_models_list)
    export = models_commands.add_parser(
        "export", help="export NAME to DIR/NAME.tflite + NAME.json + NAME.weights"
    )
    export.add_argument("name")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    export.set_defaults(run=_models_export)

    train = commands.add_parser(
        "train", help="train a plan centrally through the device runtime and report accuracy"
    )
    train.add_argument("--plan", required=True, help="path to NAME.tflite (manifest beside it)")
    train.add_argument("--dataset", default="mnist")
    train.add_argument("--epochs", type=int, default=6)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--momentum", type=float)
    train.add_argument("--test-size", type=int, default=1000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="interpreter threads")
    train.add_argument("--json", help="also write the history to this JSON file")
    train.set_defaults(run=_train)

    coordinator = commands.add_parser("coordinator", help="the coordinator service")
    coordinator_commands = coordinator.add_subparsers(dest="coordinator_command", required=True)
    serve = coordinator_commands.add_parser("serve", help="serve the device and admin APIs")
    serve.add_argument("--db", help="SQLAlchemy URL (default sqlite:///fedge.db, or FEDGE_DB_URL)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--admin-token", help="admin API token (or FEDGE_ADMIN_TOKEN)")
    serve.add_argument("--log-level", default="info")
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

    simulate = commands.add_parser(
        "simulate", help="simulate a fleet of unreliable devices against the real coordinator"
    )
    simulate.add_argument("--config", help="TOML file shaped like simulator.config")
    for flag, (_, kind, text) in _SIMULATE_FLAGS.items():
        simulate.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=text)
    simulate.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any config field"
    )
    simulate.add_argument("--no-progress", action="store_true", help="no progress bar")
    simulate.add_argument("--no-plots", action="store_true", help="skip the PNG and HTML report")
    simulate.set_defaults(run=_simulate)

    from device_sdk.agent import add_device_commands

    add_device_commands(commands)
    return parser


# The optional extra that provides a top-level package a subcommand imports.
_EXTRA_FOR = {
    "tensorflow": "models",
    "keras": "models",
    "uvicorn": "server",
    "fastapi": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "pydantic": "server",
    "pydantic_settings": "server",
    "sklearn": "sim",
    "matplotlib": "sim",
    "tqdm": "sim",
    "ray": "ray",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fedge``; errors Fedge raises on purpose print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ModuleNotFoundError as missing:
        extra = _EXTRA_FOR.get((missing.name or "").split(".")[0], "the extra this command needs")
        print(
            f"fedge: error: {args.command} needs the Python package {missing.name!r}, which is "
            f'not installed: pip install "fedge[{extra}]"',
            file=sys.stderr,
        )
        return 2
    except (FedgeError, KeyError, OSError, json.JSONDecodeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"fedge: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
