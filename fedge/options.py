"""What every Fedge command line shares: one-line usage errors, log levels, environment defaults.

Standard library only, so that each room's ``cli.py`` (and ``python -m device_sdk.cli`` on a
board) uses it without pulling anything in.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

LOG_LEVELS = ("debug", "info", "warning", "error")

# Exit statuses every command keeps: 2 for input it cannot use (argparse's own), 130 for Ctrl-C
# (128 + SIGINT, what a shell reports for a process that SIGINT ended).
USAGE_ERROR = 2
INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit status 2.

    argparse prints the whole usage before the error; the line that matters then scrolls out
    of sight behind a long synopsis. Subcommand parsers inherit the class
    (``add_subparsers`` makes its parsers of the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def subcommands(
    parser: argparse.ArgumentParser, dest: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``parser``'s required subcommands, typed as the rooms' ``add_commands`` take them."""
    # Typed by the declared ArgumentParser (the action is invariant in its parser type), while
    # the parsers it makes are of the parser's own class: OneLineParsers under OneLineParser.
    return parser.add_subparsers(dest=dest, required=True)


def add_log_level(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--log-level``, here and on the top-level ``fedge`` parser (either place works).

    The value is not defaulted in the namespace (``SUPPRESS``), so a level given before the
    subcommand is not overwritten by the subcommand's default; read it with :func:`log_level`.
    """
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help=f"how much to log (default {default or 'per command'}; debug adds every request)",
    )
    if default is not None:
        parser.set_defaults(log_level_default=default)


def log_level(args: argparse.Namespace) -> str:
    """The ``--log-level`` given before or after the subcommand, else the command's default."""
    return str(getattr(args, "log_level", None) or getattr(args, "log_level_default", "info"))


def from_env(variable: str, fallback: str | None = None) -> str | None:
    """An option's default read from ``variable`` (``FEDGE_SERVER``...), else ``fallback``."""
    return os.environ.get(variable) or fallback


def fail(prog: str, message: str) -> int:
    """Print a one-line error for ``prog`` and return the usage-error status (2)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USAGE_ERROR
