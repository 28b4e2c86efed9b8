"""``fedge models``: list the zoo and export training plans (TensorFlow, imported lazily)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedge.logs import native_chatter_dropped


def _models_list(_: argparse.Namespace) -> int:
    from models.zoo import ZOO

    for spec in ZOO.values():
        print(f"{spec.name:18} {spec.description}")
    return 0


def _models_export(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_chatter_dropped():  # TensorFlow's start-up and SavedModel lines
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


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models list`` and ``models export`` to the ``fedge`` command's subcommands."""
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
