"""`--help` on every command, shell completion, and what is read before any request."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.core import TyperGroup

from kritenctl import errors
from kritenctl.app import app
from tests.cli.conftest import Kritenctl


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    if isinstance(command, TyperGroup):
        for name, child in command.commands.items():
            yield from _command_paths(child, (*prefix, name))


def test_every_command_has_help(kritenctl: Kritenctl) -> None:
    tree = typer.main.get_command(app)
    commands = list(_command_paths(tree))
    # Each resource's five, the job and webhook commands, login and the rest.
    assert len(commands) > 60
    for command in commands:
        result = kritenctl(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage: kritenctl" in result.stdout, command


def test_shell_completion_script() -> None:
    # Asked for by the completion variable, the mechanism the generated scripts use, so
    # nothing depends on detecting the calling shell (which a test worker does not have).
    executable = Path(sys.executable).with_name("kritenctl")
    for shell in ("bash", "zsh", "fish"):
        result = subprocess.run(
            [str(executable)],
            env={**os.environ, "_KRITENCTL_COMPLETE": f"source_{shell}"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "_KRITENCTL_COMPLETE=complete_" in result.stdout, shell


def test_usage_errors_exit_2(kritenctl: Kritenctl, tmp_path: Path) -> None:
    assert kritenctl("runners", "frobnicate").exit_code == errors.USAGE
    assert kritenctl("jobs", "list", "-o", "xml").exit_code == errors.USAGE
    missing = kritenctl(
        "runners",
        "create",
        "-f",
        f"@{tmp_path / 'nope.json'}",
        KRITENCTL_URL="http://127.0.0.1:1",
        KRITENCTL_TOKEN="kri_x",
    )
    assert missing.exit_code == errors.USAGE
    assert missing.stderr.startswith("kritenctl: cannot read ")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": ')
    result = kritenctl(
        "tasks",
        "create",
        "-f",
        str(bad),
        KRITENCTL_URL="http://127.0.0.1:1",
        KRITENCTL_TOKEN="kri_x",
    )
    assert result.exit_code == errors.USAGE
    assert len(result.stderr.splitlines()) == 1


def test_version(kritenctl: Kritenctl) -> None:
    assert kritenctl.ok("--version").stdout.startswith("kritenctl ")
    assert kritenctl.ok("profiles").stdout == ""  # none yet
