"""`kritenctl login`/`logout`: the token kept in a private file, used by later commands,
and errors a script can tell apart by their exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from kritenctl import errors
from tests.cli.conftest import Kritenctl, log_in
from tests.system.harness import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.system]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_login_keeps_an_api_token_in_a_private_file(
    kriten: ServiceProcess, kritenctl: Kritenctl
) -> None:
    result = log_in(kritenctl, kriten.url)
    assert "logged in" in result.stdout

    path = kritenctl.config_file()
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    profile = yaml.safe_load(path.read_text())["profiles"]["default"]
    assert profile["url"] == kriten.url
    assert profile["token"].startswith("kri_")

    # Later commands use it; it is an API token of root's, named for kritenctl.
    tokens = json.loads(kritenctl.ok("tokens", "list", "-o", "json").stdout)
    assert [t["id"] for t in tokens] == [profile["token_id"]]
    assert tokens[0]["description"].startswith("kritenctl on ")

    # Logging in again replaces the token rather than piling them up.
    log_in(kritenctl, kriten.url)
    tokens = json.loads(kritenctl.ok("tokens", "list", "-o", "json").stdout)
    assert len(tokens) == 1
    assert tokens[0]["id"] != profile["token_id"]

    # A second profile, chosen by option or by variable.
    kritenctl.ok(
        "--profile",
        "ci",
        "login",
        "--url",
        kriten.url,
        "-u",
        "root",
        "--password-stdin",
        input="root\n",
    )
    assert "ci\t" in kritenctl.ok("profiles").stdout
    assert kritenctl("runners", "list", KRITENCTL_PROFILE="ci").exit_code == 0

    # Logout deletes the token on the server: using it again is refused.
    token = yaml.safe_load(path.read_text())["profiles"]["default"]["token"]
    kritenctl.ok("logout")
    assert _mode(path) == 0o600
    refused = kritenctl("runners", "list", KRITENCTL_URL=kriten.url, KRITENCTL_TOKEN=token)
    assert refused.exit_code == errors.AUTH
    not_logged_in = kritenctl("runners", "list")
    assert not_logged_in.exit_code == errors.AUTH
    assert "kritenctl login" in not_logged_in.stderr


def test_wrong_password_and_bad_token_are_one_line_and_exit_3(
    kriten: ServiceProcess, kritenctl: Kritenctl
) -> None:
    wrong = kritenctl(
        "login", "--url", kriten.url, "-u", "root", "--password-stdin", input="nope\n"
    )
    assert wrong.exit_code == errors.AUTH
    assert wrong.stderr == "kritenctl: invalid credentials. (HTTP 401)\n"
    assert not kritenctl.config_file().exists()

    bad = kritenctl("tasks", "list", KRITENCTL_URL=kriten.url, KRITENCTL_TOKEN="kri_" + "x" * 36)
    assert bad.exit_code == errors.AUTH
    assert bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("kritenctl: ")
    assert "Traceback" not in bad.output


def test_an_api_that_does_not_answer_is_exit_5(kritenctl: Kritenctl) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = kritenctl("runners", "list", KRITENCTL_URL=closed, KRITENCTL_TOKEN="kri_x")
    assert result.exit_code == errors.UNAVAILABLE
    assert result.stderr.startswith(f"kritenctl: cannot reach {closed}")
    assert len(result.stderr.splitlines()) == 1
