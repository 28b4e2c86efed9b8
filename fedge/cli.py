"""The ``fedge`` command line: a thin dispatcher over the subcommands each room registers.

The top layer of the house: it imports each room's ``cli`` module, whose ``add_commands`` adds
that room's subcommands and imports nothing heavy until a command runs, so ``fedge --help`` and
``fedge device run`` work in a device-only install (``pip install "fedge[device]"``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

import fedge
from fedge.errors import FedgeError
from fedge.options import INTERRUPTED, OneLineParser, add_log_level, log_level, subcommands

# Each room's cli module and the top-level subcommands it adds, in the order --help lists them.
ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("models.cli", ("models",)),
    ("coordinator.cli", ("coordinator", "admin")),
    ("simulator.cli", ("train", "simulate", "fill-stores")),
    ("device_sdk.cli", ("device",)),
)


def _unavailable(missing: ModuleNotFoundError) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        raise missing

    return run


def _add_room(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    module: str,
    names: tuple[str, ...],
) -> None:
    try:
        room = importlib.import_module(module)
    except ModuleNotFoundError as missing:
        # The room is not installed: its commands still show, and running one says what to install.
        for name in names:
            placeholder = commands.add_parser(name, help=f"(not installed: {missing.name})")
            placeholder.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            placeholder.set_defaults(run=_unavailable(missing))
        return
    room.add_commands(commands)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedge`` and its subcommands."""
    parser = OneLineParser(
        prog="fedge",
        description="Fedge: federated learning for fleets of edge devices.",
        epilog="Exit status: 0 done, 1 the command ran and failed (see its --help), 2 input it "
        "cannot use (a one-line error says which), 130 interrupted (Ctrl-C).",
    )
    parser.add_argument("--version", action="version", version=f"fedge {_version()}")
    add_log_level(parser, default=None)
    commands = subcommands(parser, "command")
    for module, names in ROOMS:
        _add_room(commands, module, names)
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of every fedge command for SHELL. Install it, "
        "e.g. for bash: fedge completion bash > ~/.local/share/bash-completion/completions/fedge"
        ', or for the current shell: eval "$(fedge completion bash)".',
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    completion.set_defaults(run=lambda args: _print_completion(parser, args.shell))
    return parser


SHELLS = ("bash", "zsh", "tcsh")


def _print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """Write ``shell``'s completion script for ``parser`` to standard output (shtab builds it)."""
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0


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


def _version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout."""
    try:
        return metadata.version("fedge")
    except metadata.PackageNotFoundError:
        return fedge.__version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fedge``; errors Fedge raises on purpose print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    if log_level(args) != "debug":
        # TensorFlow's C++ start-up chatter (oneDNN, CPU features, SavedModel loading) is for
        # debugging; warnings and errors still show. Read when TensorFlow is first imported.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"fedge: {args.command} interrupted", file=sys.stderr)
        return INTERRUPTED
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
