"""Secrets read from files (`KRITEN_<NAME>_FILE`) and generated once by
`kriten-init-secrets`, as compose does on a fresh clone; production mode still refuses
the development defaults."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from kriten_api.settings import DEVELOPMENT_JWT_KEY, ApiSettings
from kriten_common.init_secrets import GENERATORS, init_secrets, main, write_once
from kriten_common.settings import ConfigurationError, is_secret
from kriten_dispatcher.settings import DispatcherSettings
from kriten_ingress.settings import IngressSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KRITEN_* from the shell that runs the tests."""
    for variable in list(os.environ):
        if variable.startswith("KRITEN_"):
            monkeypatch.delenv(variable)


def test_every_secret_setting_is_read_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = [name for name, field in ApiSettings.model_fields.items() if is_secret(field)]
    assert set(secrets) >= {
        "amqp_url",
        "database_url",
        "encryption_keys",
        "jwt_key",
        "token_key",
        "root_password",
        "ldap_bind_password",  # optional: `SecretStr | None`
    }
    for name in secrets:
        (tmp_path / name).write_text(f"{name}-from-a-file\n")  # `echo` adds a newline
        monkeypatch.setenv(f"KRITEN_{name.upper()}_FILE", str(tmp_path / name))
    settings = ApiSettings()
    for name in secrets:
        value = getattr(settings, name)
        assert value.get_secret_value() == f"{name}-from-a-file", name
    # A setting that is not a secret has no _FILE form.
    (tmp_path / "port").write_text("9999")
    monkeypatch.setenv("KRITEN_PORT_FILE", str(tmp_path / "port"))
    assert ApiSettings().port == 8080


def test_only_the_trailing_newline_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text("  spaced key\twith tab \r\n")
    monkeypatch.setenv("KRITEN_JWT_KEY_FILE", str(tmp_path / "key"))
    assert ApiSettings().jwt_key.get_secret_value() == "  spaced key\twith tab "


def test_a_secret_given_both_ways_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text("from-the-file")
    monkeypatch.setenv("KRITEN_JWT_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("KRITEN_JWT_KEY", "from-the-variable")
    with pytest.raises(ConfigurationError, match="both KRITEN_JWT_KEY and KRITEN_JWT_KEY_FILE"):
        ApiSettings()


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "KRITEN_ENCRYPTION_KEYS_FILE: cannot read"), ("\n", "is empty")],
)
def test_a_missing_or_empty_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, expected: str
) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("KRITEN_ENCRYPTION_KEYS_FILE", str(path))
    with pytest.raises(ConfigurationError, match=expected):
        IngressSettings()


def test_generated_secrets_pass_production_and_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "secrets"
    assert init_secrets(directory) == dict.fromkeys(GENERATORS, True)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first = {}
    for name in GENERATORS:
        path = directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        first[name] = path.read_text()
        monkeypatch.setenv(f"KRITEN_{name.upper()}_FILE", str(path))
    Fernet(first["encryption_keys"].strip())  # a valid key
    assert sorted(os.listdir(directory)) == sorted(GENERATORS), "no temporary file left"

    monkeypatch.setenv("KRITEN_ENV", "production")
    for settings in (ApiSettings(), IngressSettings(), DispatcherSettings()):
        settings.check_production()  # generated values are not the development defaults

    # A second run (every `docker compose up`) keeps every one of them.
    assert init_secrets(directory) == dict.fromkeys(GENERATORS, False)
    assert {name: (directory / name).read_text() for name in GENERATORS} == first


def test_a_development_default_in_a_file_is_still_refused_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_secrets(tmp_path)
    (tmp_path / "jwt_key").write_text(DEVELOPMENT_JWT_KEY + "\n")
    for name in GENERATORS:
        monkeypatch.setenv(f"KRITEN_{name.upper()}_FILE", str(tmp_path / name))
    monkeypatch.setenv("KRITEN_ENV", "production")
    with pytest.raises(ConfigurationError, match="KRITEN_JWT_KEY"):
        ApiSettings().check_production()


def test_a_secret_written_by_hand_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "root_password").write_text("chosen-by-the-operator\n")
    written = init_secrets(tmp_path)
    assert written["root_password"] is False
    assert written["jwt_key"] is True
    assert (tmp_path / "root_password").read_text() == "chosen-by-the-operator\n"
    assert write_once(tmp_path / "jwt_key", "other") is False


def test_the_console_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path / "s")])
    assert capsys.readouterr().out.count("generated") == len(GENERATORS)
    main([str(tmp_path / "s")])
    assert capsys.readouterr().out.count("kept") == len(GENERATORS)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "file")])  # not a directory
    assert stopped.value.code == 1


def test_a_service_given_a_secret_twice_says_so_in_one_line(tmp_path: Path) -> None:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "KRITEN_JWT_KEY": "x",
        "KRITEN_JWT_KEY_FILE": str(tmp_path / "nowhere"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kriten_api"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kriten-api: both KRITEN_JWT_KEY and KRITEN_JWT_KEY_FILE are set; set one of them"
    )
