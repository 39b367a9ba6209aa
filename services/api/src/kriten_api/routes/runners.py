"""`/runners`: the image and git repository a task runs from; token and secrets encrypted.

`/runners/{name}/secret` edits the secrets alone, with the same merge rules as the runner's
`secret` field (see `merge_secrets`); every read shows the keys with masked values.

The git token goes only where it was given for: `runners:write` holders see it masked, so
moving `gitURL` to another origin (scheme, host, port) drops it unless the same request
gives a token again; otherwise the next clone would send it to a host they chose. It is
never kept with a plain `http://` URL (the dispatcher sends it only over https), and
credentials written into the URL itself are refused: `runners:read` would show them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from kriten_api.authentication import authenticate
from kriten_api.authz import require, visible_to
from kriten_api.fields import MASK, check_name, optional_str, required_str, same_name
from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.runners import RunnerIn, RunnerOut, SecretKeysIn, SecretsIn, SecretsOut
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.models import Runner, Task
from kriten_common.http import read_json, read_json_object
from kriten_common.local_jobs import is_valid_secret_name

# Schemes whose URLs name a login user as a matter of course (`ssh://git@host/...`): the
# user name is no secret there, a password still is.
USER_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
CREDENTIALS_IN_URL = (
    "gitURL must not contain credentials (user:password@): give the token in the `token`"
    " field, which is stored encrypted and never shown"
)
PLAIN_HTTP_REFUSED = (
    "a git token is never sent over plain http: use an https:// gitURL, or remove the token"
    ' (`"token": ""`)'
)


def _split_authority(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, host[:port], rest) of a `scheme://` URL, None for other forms
    (local paths, scp-like `git@host:path`). By hand rather than `urlsplit`, which raises
    on some malformed hosts: masking must work on any stored value."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    return scheme.lower(), userinfo if at else "", host, tail


def has_credentials(url: str) -> bool:
    """A password, or (except for ssh, where it is the login) a user name: a token is often
    given as the user name alone (`https://<token>@github.com/...`)."""
    parts = _split_authority(url)
    if parts is None:
        return False
    scheme, userinfo, _, _ = parts
    return ":" in userinfo or (bool(userinfo) and scheme not in USER_SCHEMES)


def masked_git_url(url: str) -> str:
    """The URL with the credentials `has_credentials` finds masked, for rows stored before
    they were refused (the user name of an ssh URL is kept)."""
    parts = _split_authority(url)
    if parts is None or not parts[1]:
        return url
    scheme, userinfo, host, tail = parts
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{MASK}"
    elif scheme not in USER_SCHEMES:
        userinfo = MASK
    return f"{url.partition('://')[0]}://{userinfo}@{host}{tail}"


def git_origin(url: str) -> tuple[str, str, int | None]:
    """Where a clone of `url` connects: scheme, host and port (the default port spelled
    out, so `https://h` and `https://h:443` are one origin). Local paths have none."""
    parts = _split_authority(url)
    if parts is None:
        head = url.split("/", 1)[0]
        if ":" in head and not url.startswith((".", "/")):
            # scp-like `[user@]host:path`: ssh to host.
            return "ssh", head.rpartition("@")[2].split(":", 1)[0].lower(), 22
        return "file", "", None
    scheme, _, host, _ = parts
    try:
        split = urlsplit(f"{scheme}://{host}")
        port = split.port or DEFAULT_PORTS.get(scheme)
        hostname = split.hostname or ""
    except ValueError:
        # A malformed host or port: compared as written, so any change counts as a move.
        return scheme, host.lower(), None
    return scheme, hostname.lower(), port


def runner_json(runner: Runner, box: SecretBox) -> dict[str, Any]:
    secrets = box.decrypt_map(runner.secrets_encrypted)
    answer: dict[str, Any] = dump(
        RunnerOut(
            name=runner.name,
            image=runner.image,
            git_url=masked_git_url(runner.git_url),
            branch=runner.branch,
            token=MASK if runner.token_encrypted else "",
            secret=dict.fromkeys(secrets, MASK),
            created_at=runner.created_at.isoformat(),
            updated_at=runner.updated_at.isoformat(),
        )
    )
    return answer


def _secret_map(body: dict[str, Any]) -> dict[str, str] | None:
    value = body.get("secret")
    return None if value is None else _checked_secrets(value)


def _checked_secrets(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.InvalidInput("secret must be an object of string values")
    for key, secret in value.items():
        # Refused here rather than when a job launches: every key becomes a file name and
        # an environment variable, under Kubernetes' rules for Secret keys.
        if secret != "" and not is_valid_secret_name(key):
            raise errors.InvalidInput(
                f"secret key {key!r} is invalid: use letters, digits, '.', '-' and '_'"
            )
    return value


def merge_secrets(current: dict[str, str], update: dict[str, str]) -> dict[str, str]:
    """An empty value deletes a key; the mask keeps it; anything else sets it."""
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        elif value != MASK:
            merged[key] = value
    return merged


def _apply(runner: Runner, body: dict[str, Any], box: SecretBox) -> None:
    if "image" in body:
        runner.image = optional_str(body, "image") or ""
    if "gitURL" in body:
        git_url = required_str(body, "gitURL")
        if has_credentials(git_url):
            raise errors.InvalidInput(CREDENTIALS_IN_URL)
        if git_origin(git_url) != git_origin(runner.git_url):
            # The token was given for the old origin; a `token` in this same request (set
            # below) is one given for the new one. The mask is not: it keeps nothing here.
            runner.token_encrypted = None
        runner.git_url = git_url
    if "branch" in body:
        runner.branch = optional_str(body, "branch") or "main"
    if "token" in body:
        token = optional_str(body, "token")
        if token != MASK:
            runner.token_encrypted = box.encrypt(token) if token else None
    if runner.token_encrypted and git_origin(runner.git_url)[0] == "http":
        # Whether the token or the URL is what changed (or neither, on a row stored before
        # this rule): a token beside an http URL would go over the wire in clear.
        raise errors.InvalidInput(PLAIN_HTTP_REFUSED)
    secrets = _secret_map(body)
    if secrets is not None:
        merged = merge_secrets(box.decrypt_map(runner.secrets_encrypted), secrets)
        runner.secrets_encrypted = box.encrypt_map(merged) if merged else None
    # Last, after the checks above and their messages: whatever they let through still
    # has the types the document gives.
    validate(RunnerIn, body)


async def list_runners(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Runner).order_by(col(Runner.name))
    query = visible_to(query, principal, "runners", keys=[col(Runner.name)])
    async with request.app[SESSIONS]() as session:
        runners, total = await paginate(session, query, Window.of(request))
    box = request.app[SECRET_BOX]
    return list_response([runner_json(r, box) for r in runners], total)


async def create_runner(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "runners", "*", "write")
    body = await read_body(request, RunnerIn)
    runner = Runner(name=check_name(body.get("name")), git_url=required_str(body, "gitURL"))
    box = request.app[SECRET_BOX]
    _apply(runner, body, box)
    async with request.app[SESSIONS]() as session:
        session.add(runner)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"runner {runner.name!r} already exists") from None
    return web.json_response(runner_json(runner, box))


async def _load(request: web.Request, session: Any, access: str) -> Runner:
    principal = await authenticate(request)
    name = request.match_info["name"]
    require(principal, "runners", name, "write" if access == "write" else "read")
    runner: Runner | None = await session.get(Runner, name)
    if runner is None:
        raise errors.NotFound(f"runner {name!r} not found")
    return runner


async def get_runner(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "read")
    return web.json_response(runner_json(runner, request.app[SECRET_BOX]))


async def update_runner(request: web.Request) -> web.Response:
    body = await read_body(request, RunnerIn)
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "write")
        same_name(body, runner.name)
        _apply(runner, body, box)
        runner.updated_at = utcnow()
        session.add(runner)
        await session.commit()
    return web.json_response(runner_json(runner, box))


async def delete_runner(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "write")
        users = (await session.exec(select(Task.name).where(Task.runner == runner.name))).all()
        if users:
            raise errors.Conflict(f"runner {runner.name!r} is used by tasks: {', '.join(users)}")
        await session.delete(runner)
        await session.commit()
    return web.json_response(dump(DeletedOut(msg="runner deleted successfully", id=runner.name)))


def _masked(secrets: dict[str, str]) -> dict[str, str]:
    answer: dict[str, str] = dump(SecretsOut(dict.fromkeys(sorted(secrets), MASK)))
    return answer


async def get_secret(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "read")
    return web.json_response(_masked(request.app[SECRET_BOX].decrypt_map(runner.secrets_encrypted)))


def _store_secrets(runner: Runner, secrets: dict[str, str], box: SecretBox) -> None:
    runner.secrets_encrypted = box.encrypt_map(secrets) if secrets else None
    runner.updated_at = utcnow()


async def set_secret(request: web.Request) -> web.Response:
    """POST and PUT: merge the body's keys into the secrets (empty deletes, mask keeps)."""
    update = _checked_secrets(await read_json_object(request))
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "write")
        merged = merge_secrets(box.decrypt_map(runner.secrets_encrypted), update)
        _store_secrets(runner, merged, box)
        session.add(runner)
        await session.commit()
    return web.json_response(_masked(merged))


async def _keys_to_delete(request: web.Request) -> list[str] | None:
    """None (all) for an empty body; else the keys named by a JSON array of key names, or
    by an object's keys (its values are ignored, so a GET answer can be sent back)."""
    if not (await request.read()).strip():
        return None
    body = await read_json(request)
    if isinstance(body, dict):
        return list(body)
    if isinstance(body, list) and all(isinstance(key, str) for key in body):
        return body
    raise errors.InvalidInput("secret must be a JSON array of key names, or an object")


async def delete_secret(request: web.Request) -> web.Response:
    """Removes the named keys (absent ones are no error), or every key when none is named."""
    keys = await _keys_to_delete(request)
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "write")
        current = box.decrypt_map(runner.secrets_encrypted)
        remaining = {} if keys is None else {k: v for k, v in current.items() if k not in keys}
        _store_secrets(runner, remaining, box)
        session.add(runner)
        await session.commit()
    return web.json_response(_masked(remaining))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/runners", f"{base}/runners/{{name}}"
    secret = f"{item}/secret"
    route(app, "GET", items, list_runners, summary="List runners", response=RunnerOut, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_runner,
            summary="Create a runner",
            request=RunnerIn,
            response=RunnerOut,
            errors=[409],
        )
    route(app, "GET", item, get_runner, summary="Get a runner", response=RunnerOut)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_runner,
            summary="Update a runner (a merge)",
            request=RunnerIn,
            response=RunnerOut,
        )
    route(
        app,
        "DELETE",
        item,
        delete_runner,
        summary="Delete a runner unused by tasks",
        response=DeletedOut,
        errors=[409],
    )
    route(
        app,
        "GET",
        secret,
        get_secret,
        summary="A runner's secret keys, masked",
        response=SecretsOut,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            secret,
            set_secret,
            summary="Merge keys into a runner's secrets",
            request=SecretsIn,
            response=SecretsOut,
        )
    route(
        app,
        "DELETE",
        secret,
        delete_secret,
        summary="Delete secret keys (all: no body)",
        request=SecretKeysIn,
        request_required=False,
        response=SecretsOut,
    )
