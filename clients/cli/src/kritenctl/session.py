"""`login`, `logout` and `profiles`: getting a credential once and keeping it.

`login` signs in with the password, then creates an API token with that login token and
keeps only the API token (the login token is logged out at once). Why not keep the login
token: it lives `KRITEN_JWT_TTL_SECONDS` (an hour by default) and can be renewed only
while it is still valid, so a CLI used now and then would ask for the password every
time. An API token lasts until it is deleted, disabled or expires (never, by default), is
listed under its own description (`kritenctl tokens list`) and can be revoked alone,
without ending anyone's browser sessions; the api keeps only its HMAC. `logout` deletes
it on the server.
"""

from __future__ import annotations

import socket
import sys
from typing import Annotated

import typer

from kritenctl import config, paths
from kritenctl.client import Client, expect
from kritenctl.errors import AUTH, USAGE, CliError
from kritenctl.state import state_of


def _read_secret_line(what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CliError(f"no {what} on standard input", USAGE)
    return line


def _new_api_token(
    url: str, username: str, password: str, provider: str, profile: str
) -> dict[str, str]:
    with Client(url) as anonymous:
        answer = anonymous.call(
            paths.LOGIN, body={"username": username, "password": password, "provider": provider}
        )
        login_token = expect(answer, "token")["token"]
    with Client(url, login_token) as session:
        description = f"kritenctl on {socket.gethostname()} (profile {profile})"
        created = expect(
            session.call(paths.API_TOKENS.create, body={"description": description}),
            "key",
            "id",
        )
        # The login token is not needed any more: end it rather than leave it valid.
        session.call(paths.LOGOUT)
    return created


def _check_token(url: str, token: str) -> None:
    """A given token works (any authenticated user may list their own tokens)."""
    with Client(url, token) as client:
        client.call(paths.API_TOKENS.list, query={"limit": 1})


def _forget_old_token(url: str, old: config.Profile | None, new_token: str) -> None:
    """Deletes the token a profile held before a new login, so logins do not pile up
    tokens; best effort (it may be gone already, or belong to another api)."""
    if old is None or not old.token_id or old.url.rstrip("/") != url:
        return
    try:
        with Client(url, new_token) as client:
            client.call(paths.API_TOKENS.delete, {"id": old.token_id})
    except CliError:
        pass


def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="The api's base URL, e.g. http://127.0.0.1:8080")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="Your username")] = None,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (else it is asked)")
    ] = False,
    provider: Annotated[str, typer.Option(help="local or active_directory")] = "local",
    token_stdin: Annotated[
        bool,
        typer.Option(help="Keep an existing API token (kri_…) read from standard input instead"),
    ] = False,
) -> None:
    """Log in and keep an API token for later commands (in the profile, file mode 0600)."""
    profile = state_of(ctx).profile
    url = url.rstrip("/")
    old = config.load_profile(profile)
    if token_stdin:
        token = _read_secret_line("token")
        _check_token(url, token)
        saved = config.Profile(url=url, token=token, username=username or "")
    else:
        if not username:
            username = typer.prompt("Username")
        if password_stdin:
            password = _read_secret_line("password")
        else:
            password = typer.prompt("Password", hide_input=True)
        created = _new_api_token(url, username, password, provider, profile)
        saved = config.Profile(
            url=url, token=created["key"], username=username, token_id=created["id"]
        )
        _forget_old_token(url, old, saved.token)
    path = config.save_profile(profile, saved)
    who = f" as {saved.username}" if saved.username else ""
    typer.echo(f"logged in to {url}{who} (profile {profile}); the token is in {path}")


def logout(ctx: typer.Context) -> None:
    """Delete the profile's API token on the server and forget the profile."""
    profile_name = state_of(ctx).profile
    profile = config.load_profile(profile_name)
    if profile is None:
        raise CliError(f"no profile {profile_name!r}", AUTH)
    if profile.token_id:
        try:
            with Client(profile.url, profile.token) as client:
                client.call(paths.API_TOKENS.delete, {"id": profile.token_id})
        except CliError as problem:
            # Forget it anyway: a token the api no longer takes is no use to keep.
            typer.echo(f"kritenctl: the token was not deleted on the server: {problem}", err=True)
    config.remove_profile(profile_name)
    typer.echo(f"logged out (profile {profile_name})")


def profiles() -> None:
    """List the profiles in the config file."""
    for name in config.profile_names():
        profile = config.load_profile(name)
        assert profile is not None
        who = f"{profile.username}@" if profile.username else ""
        typer.echo(f"{name}\t{who}{profile.url}")
