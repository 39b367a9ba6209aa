"""The `active_directory` login provider against a REAL OpenLDAP server on loopback.

`tests/ldap_server.py` starts Debian's slapd (no ldap3 mock anywhere here) with its
own CA, over StartTLS and LDAPS, configured like Active Directory in the one way that
matters most: a bind with a DN and an empty password succeeds, unauthenticated.
Each transport-sensitive test runs over both StartTLS and LDAPS, verifying the
server's certificate against the generated CA.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlmodel import select

from kriten_api import jwt_tokens
from kriten_api.keys import SESSIONS, SETTINGS
from kriten_api.ldap_auth import LdapConfig, authenticate_sync, prepared_password, user_filter
from kriten_api.settings import ApiSettings
from kriten_common.db.models import User
from kriten_common.settings import ConfigurationError
from tests.api.conftest import ApiClient, BuildApi
from tests.ldap_server import LdapServer, free_port, running_slapd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROVIDER = "active_directory"
AND_FILTER = "(&(objectClass=inetOrgPerson)(sAMAccountName={username}))"
MakeApi = Callable[..., Awaitable[ApiClient]]


@pytest.fixture(scope="session")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture(params=["starttls", "ldaps"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ldap_overrides(directory: LdapServer, transport: str, **extra: Any) -> dict[str, Any]:
    return {
        "ldap_url": directory.starttls_url if transport == "starttls" else directory.ldaps_url,
        "ldap_starttls": transport == "starttls",
        "ldap_ca_file": directory.ca_file,
        "ldap_bind_dn": directory.service_dn,
        "ldap_bind_password": SecretStr(directory.service_password),
        "ldap_base_dn": directory.base_dn,
        "ldap_timeout_seconds": 3.0,
        **extra,
    }


@pytest.fixture
def make_api(api_settings: ApiSettings, build_api: BuildApi) -> MakeApi:
    async def make(**overrides: Any) -> ApiClient:
        # Through the constructor, so the settings' validators run on the overrides too.
        settings = ApiSettings(**{**dict(api_settings), **overrides})
        return await build_api(settings)

    return make


@pytest.fixture
async def ldap_api(make_api: MakeApi, directory: LdapServer, transport: str) -> ApiClient:
    return await make_api(**ldap_overrides(directory, transport))


async def post_login(api: ApiClient, username: str, password: str) -> tuple[int, Any]:
    body = {"username": username, "password": password, "provider": PROVIDER}
    response = await api.post("/api/v1/login", json=body)
    return response.status, await response.json()


def app_of(api: ApiClient) -> web.Application:
    app: web.Application | None = api.app
    assert app is not None
    return app


async def directory_users(api: ApiClient) -> list[User]:
    async with app_of(api)[SESSIONS]() as session:
        query = select(User).where(User.provider == PROVIDER)
        return list((await session.exec(query)).all())


def claims(api: ApiClient, token: str) -> jwt_tokens.Claims:
    key = app_of(api)[SETTINGS].jwt_key.get_secret_value()
    return jwt_tokens.decode_token(token, key=key, now=time.time())


def unauthenticated_bind(port: int, dn: str) -> int:
    """The result code of a simple bind with `dn` and an EMPTY password (raw BER).

    ldap3 refuses to send one, so the request is written by hand.
    """
    name = dn.encode()
    bind = b"\x02\x01\x03" + b"\x04" + bytes([len(name)]) + name + b"\x80\x00"
    request = b"\x02\x01\x01" + b"\x60" + bytes([len(bind)]) + bind
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"\x30" + bytes([len(request)]) + request)
        response = connection.recv(1024)
    return response[response.index(b"\x0a\x01") + 2]


# --- logins over both transports ------------------------------------------------------


async def test_login_creates_the_directory_user_once(
    ldap_api: ApiClient, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    status, body = await post_login(ldap_api, "alice", alice.password)
    assert status == 200, body
    first = claims(ldap_api, body["token"])
    assert (first.username, first.provider) == ("alice", PROVIDER)
    # The directory compares names without case: `ALICE` is the same account and user.
    status, body = await post_login(ldap_api, "ALICE", alice.password)
    assert status == 200, body
    assert claims(ldap_api, body["token"]).user_id == first.user_id
    users = await directory_users(ldap_api)
    assert [(user.username, user.id, user.password_hash) for user in users] == [
        ("alice", first.user_id, None)
    ]
    # The token works like a local user's.
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert (await ldap_api.get("/api/v1/refresh", headers=headers)).status == 200


async def test_wrong_password_and_unknown_user_are_the_same_401(
    ldap_api: ApiClient, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    assert await post_login(ldap_api, "alice", alice.password + "x") == (
        401,
        {"error": "invalid credentials."},
    )
    assert await post_login(ldap_api, "nobody", alice.password) == (
        401,
        {"error": "invalid credentials."},
    )
    # Another user's password is not this user's.
    assert (await post_login(ldap_api, "bob", alice.password))[0] == 401
    assert await directory_users(ldap_api) == []


async def test_empty_password_is_refused_though_the_server_accepts_it(
    ldap_api: ApiClient, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    # The harness server answers an empty-password bind with success, as AD does...
    assert unauthenticated_bind(directory.ldap_port, alice.dn) == 0
    # ...so only Kriten stands between an empty password and a session.
    assert await post_login(ldap_api, "alice", "") == (401, {"error": "invalid credentials."})
    assert await directory_users(ldap_api) == []


@pytest.mark.parametrize(
    "username",
    ["ali*", "*)(uid=alice", "*)(|(uid=alice)(uid=nobody)"],
)
async def test_filter_metacharacters_cannot_match_another_user(
    make_api: MakeApi, directory: LdapServer, username: str
) -> None:
    alice = directory.users["alice"]
    # Control: pasted in unescaped, each name would select exactly alice, whose password
    # is then given; only the escaping makes the login below fail.
    assert search_dns(directory, AND_FILTER.replace("{username}", username)) == [alice.dn]
    assert search_dns(directory, user_filter(AND_FILTER, username)) == []
    api = await make_api(**ldap_overrides(directory, "ldaps", ldap_user_filter=AND_FILTER))
    assert await post_login(api, username, alice.password) == (
        401,
        {"error": "invalid credentials."},
    )
    assert await directory_users(api) == []


def search_dns(directory: LdapServer, search_filter: str) -> list[str]:
    """The DNs the service account finds with `search_filter`, taken as written."""
    server = ldap3.Server("127.0.0.1", port=directory.ldap_port, get_info=ldap3.NONE)
    with ldap3.Connection(
        server,
        user=directory.service_dn,
        password=directory.service_password,
        auto_bind=True,
        receive_timeout=5,
    ) as connection:
        connection.search(directory.base_dn, search_filter, attributes=[])
        return sorted(entry.entry_dn for entry in connection.entries)


# --- the directory unreachable or untrusted ------------------------------------------


async def test_directory_down_is_503_and_not_a_failed_login(
    make_api: MakeApi, directory: LdapServer
) -> None:
    closed = f"ldaps://127.0.0.1:{free_port()}"
    api = await make_api(**ldap_overrides(directory, "ldaps", ldap_url=closed))
    # More attempts than the username limit: none is counted as a failure.
    for _ in range(7):
        response = await api.post(
            "/api/v1/login",
            json={"username": "alice", "password": "alice-password", "provider": PROVIDER},
        )
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "directory" in (await response.json())["error"]


async def test_a_certificate_from_another_ca_is_refused(
    make_api: MakeApi, directory: LdapServer, transport: str
) -> None:
    alice = directory.users["alice"]
    api = await make_api(
        **ldap_overrides(directory, transport, ldap_ca_file=directory.wrong_ca_file)
    )
    assert (await post_login(api, "alice", alice.password))[0] == 503
    assert await directory_users(api) == []


async def test_a_certificate_for_another_host_is_refused(
    make_api: MakeApi, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    api = await make_api(
        **ldap_overrides(directory, "ldaps", ldap_url=directory.ldaps_url_unnamed_host)
    )
    assert (await post_login(api, "alice", alice.password))[0] == 503


async def test_a_refused_service_account_is_503_not_401(
    make_api: MakeApi, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    api = await make_api(
        **ldap_overrides(directory, "starttls", ldap_bind_password=SecretStr("wrong"))
    )
    assert (await post_login(api, "alice", alice.password))[0] == 503


async def test_a_base_dn_that_does_not_exist_is_503_not_401(
    make_api: MakeApi, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    api = await make_api(
        **ldap_overrides(directory, "ldaps", ldap_base_dn="ou=nowhere,dc=example,dc=org")
    )
    assert (await post_login(api, "alice", alice.password))[0] == 503


async def test_provider_is_400_when_ldap_is_not_configured(make_api: MakeApi) -> None:
    api = await make_api()
    assert await post_login(api, "alice", "alice-password") == (
        400,
        {"error": "provider 'active_directory' is not configured"},
    )


# --- the pieces, without HTTP ---------------------------------------------------------


def test_username_is_escaped_in_the_filter() -> None:
    assert user_filter("(uid={username})", "*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert user_filter("(uid={username})", "a\\b\0") == r"(uid=a\5cb\00)"
    # Braces in the template or the name are text, not format fields.
    assert user_filter("(&(x={y})(uid={username}))", "{username}") == ("(&(x={y})(uid={username}))")


@pytest.mark.parametrize("password", ["", "\u00ad", "\u00ad\u200c", "bad\x07"])
def test_passwords_that_would_bind_unauthenticated_or_fail_prep_are_refused(
    password: str,
) -> None:
    # SASLprep maps U+00AD and U+200C to nothing: non-empty text, an empty bind.
    assert prepared_password(password) is None


def test_passwords_are_sent_as_prepared() -> None:
    assert prepared_password("correct horse") == b"correct horse"
    assert prepared_password("pa\u00adss") == b"pass"


def test_empty_password_never_reaches_the_directory(directory: LdapServer) -> None:
    # Settings that could not even connect: refusing must come before any network I/O.
    config = LdapConfig(
        host="127.0.0.1",
        port=free_port(),
        use_ssl=True,
        starttls=False,
        ca_file=str(directory.ca_file),
        bind_dn=None,
        bind_password=None,
        base_dn=directory.base_dn,
        user_filter="(uid={username})",
        username_attribute="uid",
        timeout=1.0,
    )
    assert authenticate_sync(config, "alice", "") is None


def settings_with(tmp_path: Path, **values: Any) -> ApiSettings:
    return ApiSettings(database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/k.db"), **values)


def test_plaintext_ldap_must_be_allowed_and_production_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="STARTTLS"):
        settings_with(tmp_path, ldap_url="ldap://dc.example.org")
    allowed = settings_with(tmp_path, ldap_url="ldap://dc.example.org", ldap_allow_plaintext=True)
    assert any("KRITEN_LDAP_STARTTLS" in problem for problem in allowed.production_problems())
    secure = settings_with(tmp_path, ldap_url="ldap://dc.example.org", ldap_starttls=True)
    assert not any("LDAP" in problem for problem in secure.production_problems())
    with pytest.raises(ConfigurationError):
        settings_with(tmp_path, ldap_url="ldaps://dc.example.org", ldap_starttls=True)
    with pytest.raises(ConfigurationError, match="username"):
        settings_with(tmp_path, ldap_url="ldaps://dc.example.org", ldap_user_filter="(uid=x)")
    with pytest.raises(ValueError, match="ldap"):
        settings_with(tmp_path, ldap_url="https://dc.example.org")
