"""``fedge simulate`` and ``fedge train``; the simulator and device SDK are imported lazily."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fedge.options import INTERRUPTED, add_log_level, fail, log_level


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from device_sdk import PlanRunner, evaluate, train_locally
    from fedge.manifest import HyperParameters
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
    hparams = HyperParameters(
        local_epochs=1,
        batch_size=args.batch_size or hp.batch_size,
        learning_rate=args.learning_rate if args.learning_rate is not None else hp.learning_rate,
        momentum=args.momentum if args.momentum is not None else hp.momentum,
    )
    print(
        f"training {manifest.name} on-device ({runner.runtime}) on {args.dataset}: "
        f"{len(train)} train / {len(test)} test examples, {args.epochs} epochs, "
        f"batch {hparams.batch_size}, lr {hparams.learning_rate}, momentum {hparams.momentum}"
    )
    history = []
    for epoch in range(1, args.epochs + 1):
        result = train_locally(
            runner, base_weights=weights, x=train.x, y=train.y, hparams=hparams, rng=rng
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


# Flags of `fedge simulate` and the config field each one sets.
_SIMULATE_FLAGS: dict[str, tuple[str, type, str]] = {
    "devices": ("devices", int, "registered devices (default 1,000)"),
    "dropout": (
        "population.dropout",
        float,
        "chance a device drops mid-task (default 0.1; 0: no dropout, no crash after upload)",
    ),
    "hours": ("hours", float, "virtual duration in hours (default 24)"),
    "mode": ("mode", str, "async (FedBuff) or sync (FedAvg rounds)"),
    "model": ("model", str, "zoo model to train (default mnist_mlp)"),
    "dataset": ("dataset", str, "mnist, digits, synthetic_A_B, synthetic_iid, shakespeare"),
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
    "dp_epsilon": ("dp_epsilon", float, "differential privacy: calibrate z for this ε budget"),
    "codec": (
        "codec",
        str,
        "uplink codec(s) the job allows: float32, fp16, rot1..rot8, eden1, randk10+rot4, ... "
        "(comma-separated: each lease gets the least lossy one within job.compression's budget)",
    ),
}


def _simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from simulator import config as sim_config
    from simulator.report import write
    from simulator.run import simulate

    level = log_level(args)
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if level != "debug":  # a line per request and per migration: debug only
        for chatty in ("httpx", "alembic"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        overrides = dict(sim_config.parse_assignment(text) for text in args.set or [])
    except ValueError as exc:  # "expected KEY=VALUE, got 'foo'"
        return fail("fedge simulate", f"--set: {exc}")
    for flag, (field, _, _) in _SIMULATE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if args.no_progress:
        overrides["progress"] = False
    if args.audit:
        overrides["audit.enabled"] = True
    try:
        config = sim_config.load(Path(args.config) if args.config else None, overrides)
    except ValidationError as exc:  # one line, each problem as FIELD: reason
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'config'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        print(f"fedge: error: invalid simulation config: {problems}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"fedge: error: invalid simulation config: {exc}", file=sys.stderr)
        return 2
    if args.personalize and config.personalization is None:  # a config's own table wins
        config = config.model_copy(update={"personalization": sim_config.PersonalizationConfig()})
    outcome = simulate(config)  # Ctrl-C while devices run ends it early, outcome.interrupted
    figures = write(outcome, config.out, plots=not args.no_plots)
    print(
        f"{'interrupted: ' if outcome.interrupted else ''}"
        f"{figures['devices']} devices, {figures['virtual_hours']:.2f} virtual hours in "
        f"{figures['wall_seconds']:.1f} s: {figures['versions']} versions, "
        f"{figures['updates_accepted']} updates accepted, final accuracy "
        f"{figures['final_accuracy']:.4f} (worst 10% of devices "
        f"{figures['worst10_accuracy']:.4f}); {'partial ' if outcome.interrupted else ''}"
        f"report in {config.out}"
    )
    personalized = figures.get("personalization")
    if personalized and personalized.get("devices"):
        rule, always = personalized["keep_if_better"], personalized["fine_tune_always"]
        print(
            f"personalized {personalized['devices']} devices: worst 10% "
            f"{personalized['baseline']['worst10']:.4f} -> {rule['worst10']:.4f} keeping only "
            f"if better ({rule['hurt_share']:.1%} hurt), {always['worst10']:.4f} fine-tuning "
            f"always ({always['hurt_share']:.1%} hurt)"
        )
    return INTERRUPTED if outcome.interrupted else 0


def _fill_stores(args: argparse.Namespace) -> int:
    from simulator.stores import fill_stores

    filled = fill_stores(
        Path(args.out),
        devices=args.devices,
        dataset=args.dataset,
        alpha=args.alpha,
        examples_per_device=args.examples,
        seed=args.seed,
    )
    for store in filled:
        print(f"{store.data}  {store.examples} examples  (--state-dir {store.state})")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train``, ``simulate`` and ``fill-stores`` to the ``fedge`` command's subcommands."""
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

    simulate = commands.add_parser(
        "simulate",
        help="simulate a fleet of unreliable devices against the real coordinator",
        epilog="Ctrl-C stops the run where it is, still writes the report of what ran "
        "(summary.json says interrupted) and exits with status 130.",
    )
    simulate.add_argument("--config", help="TOML file shaped like simulator.config")
    for flag, (_, kind, text) in _SIMULATE_FLAGS.items():
        simulate.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=text)
    simulate.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any config field"
    )
    simulate.add_argument("--no-progress", action="store_true", help="no progress bar")
    simulate.add_argument(
        "--personalize",
        action="store_true",
        help="at the end, fine-tune the model on each fairness-sampled device, keep it only if "
        "better on the device's validation split, and report the per-device gains "
        "(settings: the config's personalization table)",
    )
    simulate.add_argument(
        "--audit",
        action="store_true",
        help="privacy audit of the final model: membership-inference AUC and an empirical ε "
        "from canary devices (the audit table of the config sizes it)",
    )
    add_log_level(simulate, default="warning")
    simulate.add_argument("--no-plots", action="store_true", help="skip the PNG and HTML report")
    simulate.set_defaults(run=_simulate)

    fill = commands.add_parser(
        "fill-stores",
        help="write example stores for real agents on one machine from an offline dataset",
        description="Split an offline dataset over DEVICES example stores, OUT/device-N/"
        "examples.db, each with its own state folder, for `fedge device run --data … "
        "--state-dir …` (scripts/local-fleet.sh runs three agents this way).",
    )
    fill.add_argument("--out", required=True, help="folder to write device-1, device-2, … in")
    fill.add_argument("--devices", type=int, default=3)
    fill.add_argument("--dataset", default="mnist", help="mnist (5,000 digits) or digits")
    fill.add_argument("--alpha", type=float, help="Dirichlet α of a label-skewed split (IID)")
    fill.add_argument("--examples", type=int, help="at most this many examples per store")
    fill.add_argument("--seed", type=int, default=0)
    fill.set_defaults(run=_fill_stores)
