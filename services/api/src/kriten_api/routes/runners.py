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

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from kriten_api.authentication import authenticate
from kriten_api.authz import require, visible_to
from kriten_api.fields import MASK, same_name
from kriten_api.keys import SECRET_BOX, SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, dump, read_body, validate
from kriten_api.schemas.runners import (
    BOX,
    RunnerBase,
    RunnerCreate,
    RunnerPublic,
    RunnerUpdate,
    SecretKeysIn,
    SecretsIn,
    SecretsOut,
    check_secret_keys,
    git_origin,
)
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.models import Runner, Task
from kriten_common.http import read_json, read_json_object

PLAIN_HTTP_REFUSED = (
    "a git token is never sent over plain http: use an https:// gitURL, or remove the token"
    ' (`"token": ""`)'
)


def runner_public(runner: Runner, box: SecretBox) -> RunnerPublic:
    return RunnerPublic.model_validate(runner, context={BOX: box})


def _checked_secrets(value: Any) -> dict[str, str]:
    """The body of `/runners/{name}/secret`, in the words its clients have always read."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.InvalidInput("secret must be an object of string values")
    return check_secret_keys(value)


def merge_secrets(current: dict[str, str], update: dict[str, str]) -> dict[str, str]:
    """An empty value deletes a key; the mask keeps it; anything else sets it."""
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        elif value != MASK:
            merged[key] = value
    return merged


def _apply(runner: Runner, data: RunnerBase, box: SecretBox) -> None:
    """The fields `data` was given, onto `runner`: the rules that depend on what the row
    holds (the token's origin, the secrets' merge) are here, the others in the model."""
    given = data.model_fields_set
    if "image" in given:
        runner.image = data.image or ""
    if data.git_url is not None:
        if git_origin(data.git_url) != git_origin(runner.git_url):
            # The token was given for the old origin; a `token` in this same request (set
            # below) is one given for the new one. The mask is not: it keeps nothing here.
            runner.token_encrypted = None
        runner.git_url = data.git_url
    if "branch" in given:
        runner.branch = data.branch or "main"
    if "token" in given and data.token != MASK:
        runner.token_encrypted = box.encrypt(data.token) if data.token else None
    if runner.token_encrypted and git_origin(runner.git_url)[0] == "http":
        # Whether the token or the URL is what changed (or neither, on a row stored before
        # this rule): a token beside an http URL would go over the wire in clear.
        raise errors.InvalidInput(PLAIN_HTTP_REFUSED)
    if data.secret is not None:
        merged = merge_secrets(box.decrypt_map(runner.secrets_encrypted), data.secret)
        runner.secrets_encrypted = box.encrypt_map(merged) if merged else None


async def list_runners(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Runner).order_by(col(Runner.name))
    query = visible_to(query, principal, "runners", keys=[col(Runner.name)])
    async with request.app[SESSIONS]() as session:
        runners, total = await paginate(session, query, Window.of(request))
    box = request.app[SECRET_BOX]
    return list_response([dump(runner_public(r, box)) for r in runners], total)


async def create_runner(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "runners", "*", "write")
    data = validate(RunnerCreate, await read_body(request, RunnerCreate))
    runner = Runner(name=data.name, git_url=data.git_url)
    box = request.app[SECRET_BOX]
    _apply(runner, data, box)
    async with request.app[SESSIONS]() as session:
        session.add(runner)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"runner {runner.name!r} already exists") from None
    return web.json_response(dump(runner_public(runner, box)))


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
    return web.json_response(dump(runner_public(runner, request.app[SECRET_BOX])))


async def update_runner(request: web.Request) -> web.Response:
    body = await read_body(request, RunnerUpdate)
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        runner = await _load(request, session, "write")
        # The values are checked once the caller may change the runner, as before.
        data = validate(RunnerUpdate, body)
        same_name(body, runner.name)
        _apply(runner, data, box)
        runner.updated_at = utcnow()
        session.add(runner)
        await session.commit()
    return web.json_response(dump(runner_public(runner, box)))


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
    route(
        app, "GET", items, list_runners, summary="List runners", response=RunnerPublic, listing=True
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_runner,
            summary="Create a runner",
            request=RunnerCreate,
            response=RunnerPublic,
            errors=[409],
        )
    route(app, "GET", item, get_runner, summary="Get a runner", response=RunnerPublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_runner,
            summary="Update a runner (a merge)",
            request=RunnerUpdate,
            response=RunnerPublic,
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
