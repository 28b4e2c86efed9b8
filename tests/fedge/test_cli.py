"""The ``fedge`` dispatcher: every room's subcommands, friendly one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from fedge import cli
from fedge.options import log_level


def test_help_lists_the_subcommands_of_every_room(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])

    assert exited.value.code == 0
    listed = set(capsys.readouterr().out.split())
    assert {"models", "coordinator", "admin", "train", "simulate", "device"} <= listed


def test_each_room_registers_through_its_own_cli_module():
    parser = cli.build_parser()

    runs = {
        argv[0]: parser.parse_args(argv).run.__module__
        for argv in (
            ["models", "list"],
            ["coordinator", "serve"],
            ["admin", "versions", "1"],
            ["simulate"],
            ["train", "--plan", "p.tflite"],
        )
    }

    assert runs == {
        "models": "models.cli",
        "coordinator": "coordinator.cli",
        "admin": "coordinator.cli",
        "simulate": "simulator.cli",
        "train": "simulator.cli",
    }


def test_building_the_parser_imports_only_the_rooms_cli_modules(tmp_path):
    code = (
        "import json, sys, fedge.cli\n"
        "fedge.cli.build_parser()\n"
        "print(json.dumps(list(sys.modules)))"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )

    loaded = set(json.loads(done.stdout))
    heavy = {"tensorflow", "fastapi", "sqlalchemy", "pydantic", "uvicorn", "sklearn", "matplotlib"}
    assert {m.split(".")[0] for m in loaded} & heavy == set()
    for room in ("coordinator", "models", "simulator"):
        assert {m for m in loaded if m.split(".")[0] == room} == {room, f"{room}.cli"}


def test_serve_without_the_server_extra_names_the_extra_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` meets when absent
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")

    status = cli.main(["coordinator", "serve"])

    assert status == 2
    error = capsys.readouterr().err
    assert error == (
        "fedge: error: coordinator needs the Python package 'uvicorn', which is not installed: "
        'pip install "fedge[server]"\n'
    )


def test_a_room_that_is_not_installed_still_shows_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(cli, "ROOMS", (*cli.ROOMS, ("fedge_absent_room.cli", ("ghost",))))

    status = cli.main(["ghost", "anything", "--at-all"])

    assert status == 2
    assert capsys.readouterr().err.startswith(
        "fedge: error: ghost needs the Python package 'fedge_absent_room', which is not installed"
    )
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "ghost" in capsys.readouterr().out


def test_admin_without_a_token_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.delenv("FEDGE_ADMIN_TOKEN", raising=False)

    status = cli.main(["admin", "versions", "1"])

    assert status == 2
    assert capsys.readouterr().err == "fedge: error: pass --token or set FEDGE_ADMIN_TOKEN\n"


def test_a_missing_plan_file_is_one_line_not_a_traceback(tmp_path, capsys):
    status = cli.main(["train", "--plan", str(tmp_path / "absent.tflite")])

    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("fedge: error: ") and error.count("\n") == 1


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"fedge {cli._version()}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "DEBUG", "device", "run", "--server", "http://x", "--data", "d"],
        ["device", "run", "--server", "http://x", "--data", "d", "--log-level", "debug"],
    ],
    ids=["before", "after"],
)
def test_the_log_level_works_before_or_after_the_subcommand(argv):
    args = cli.build_parser().parse_args(argv)

    assert log_level(args) == "debug"


def test_without_a_log_level_each_command_keeps_its_own_default():
    parser = cli.build_parser()

    assert log_level(parser.parse_args(["simulate"])) == "warning"
    assert log_level(parser.parse_args(["coordinator", "serve"])) == "info"


def test_a_usage_error_is_one_line_naming_the_help(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["admin", "versions", "not-a-number"])

    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "fedge admin versions: error: argument job: invalid int value: 'not-a-number' "
        "(see fedge admin versions --help)\n"
    )


def test_ctrl_c_in_any_command_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(_):
        raise KeyboardInterrupt

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(command="simulate", run=interrupted)

    monkeypatch.setattr(cli, "build_parser", Parser)

    status = cli.main(["simulate"])

    assert status == 130
    assert capsys.readouterr().err == "fedge: simulate interrupted\n"
