"""``fedge completion SHELL``: a completion script that completes fedge's real commands."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fedge.cli import main


def _complete(script: str, line: str) -> list[str]:
    """What bash offers after ``line`` with ``script`` sourced (the words typed so far)."""
    words = line.split(" ")
    program = (
        f"{script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _shtab_fedge; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    if shutil.which("bash") is None:  # pragma: no cover - every supported machine has bash
        pytest.skip("bash is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def test_bash_completes_a_subcommand(bash_script: str):
    assert _complete(bash_script, "fedge sim") == ["simulate"]


def test_bash_completes_a_subcommands_option(bash_script: str):
    assert "--devices" in _complete(bash_script, "fedge simulate --dev")


def test_bash_completes_the_admin_commands(bash_script: str):
    assert {"jobs", "plans", "devices", "versions"} <= set(_complete(bash_script, "fedge admin "))


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_other_shells_get_a_script_naming_fedge(shell: str, capsys: pytest.CaptureFixture[str]):
    assert main(["completion", shell]) == 0

    assert "fedge" in capsys.readouterr().out


def test_a_shell_it_cannot_complete_is_a_one_line_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        main(["completion", "fish"])

    assert stopped.value.code == 2
    assert "invalid choice: 'fish'" in capsys.readouterr().err
