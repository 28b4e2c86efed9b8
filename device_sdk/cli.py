"""``fedge device run``: the on-device agent's subcommand, registered by ``fedge.cli``."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``device run`` to the ``fedge`` command's subcommands."""
    from device_sdk.agent import add_device_commands

    add_device_commands(commands)
