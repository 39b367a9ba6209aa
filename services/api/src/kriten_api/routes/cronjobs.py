"""`/cronjobs`: a task run on a cron schedule, as the user who created the cronjob.

The dispatcher's scheduler reads these rows and fires them; this module only validates and
stores them. A cronjob runs with its owner's permissions, so (as for webhooks) creating one
needs `jobs:write` on its task, and so does any later change to what it runs or when:
otherwise a user with only `cronjobs:write` could make another user's cronjob run a task,
or an input, that its owner may run and they may not. Disabling alone needs no `jobs:write`.
Owners manage their own cronjobs without any role; `cronjobs:read`/`write` reach others'.

Schedules are standard 5-field cron expressions, evaluated in UTC (`schemas.cronjobs`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_owner_or, visible_to
from kriten_api.fields import same_name
from kriten_api.keys import SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, JsonSchemaOut, dump, read_body, validate
from kriten_api.schemas.cronjobs import CronJobCreate, CronJobPublic, CronJobUpdate
from kriten_common import errors
from kriten_common.admission import validate_input
from kriten_common.clock import utcnow
from kriten_common.db.models import CronJob, Task
from kriten_common.rbac import Access, Principal

# Changes that cannot make a cronjob run anything it would not have run anyway.
HARMLESS_FIELDS = frozenset({"name", "owner", "disable"})
# What a create or an update sets from its body (`name` and `owner` are never changed).
SETTABLE_FIELDS = ("task", "schedule", "disable", "extra_vars")


def compact_json(extra_vars: dict[str, Any]) -> str:
    """`EXTRA_VARS` as the scheduler sends it: compact JSON."""
    return json.dumps(extra_vars, separators=(",", ":"), ensure_ascii=False)


async def _check_runnable(
    session: AsyncSession, principal: Principal, task_name: str, extra_vars: dict[str, Any]
) -> None:
    """The task exists, the caller may run it, and `extra_vars` satisfies its schema:
    what would fail every firing is refused now instead."""
    task = await session.get(Task, task_name)
    if task is None:
        raise errors.InvalidInput(f"task {task_name!r} does not exist")
    require(principal, "jobs", task_name, "write")
    try:
        validate_input(task.schema_, compact_json(extra_vars))
    except errors.InvalidInput as problem:
        raise errors.InvalidInput(f"extra_vars: {problem.message}") from None


def _apply(cronjob: CronJob, data: CronJobCreate | CronJobUpdate) -> None:
    for field in SETTABLE_FIELDS:
        if field in data.model_fields_set:
            setattr(cronjob, field, getattr(data, field))


async def list_cronjobs(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(CronJob).order_by(col(CronJob.name))
    keys, owner = [col(CronJob.name)], col(CronJob.owner_id)
    query = visible_to(query, principal, "cronjobs", keys=keys, owner=owner)
    async with request.app[SESSIONS]() as session:
        cronjobs, total = await paginate(session, query, Window.of(request))
    return list_response([dump(CronJobPublic.model_validate(c)) for c in cronjobs], total)


async def create_cronjob(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    data = validate(CronJobCreate, await read_body(request, CronJobCreate))
    now = utcnow()
    cronjob = CronJob(
        name=data.name,
        owner=principal.username,
        owner_id=principal.user_id,
        task=data.task,
        schedule=data.schedule,
        created_at=now,
        updated_at=now,
    )
    _apply(cronjob, data)
    async with request.app[SESSIONS]() as session:
        await _check_runnable(session, principal, cronjob.task, cronjob.extra_vars)
        if await session.get(CronJob, cronjob.name) is not None:
            raise errors.Conflict(f"cronjob {cronjob.name!r} already exists")
        session.add(cronjob)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"cronjob {cronjob.name!r} already exists") from None
    return web.json_response(dump(CronJobPublic.model_validate(cronjob)))


async def _load(request: web.Request, session: AsyncSession, *, write: bool) -> CronJob:
    principal = await authenticate(request)
    name = request.match_info["name"]
    access: Access = "write" if write else "read"
    cronjob = await session.get(CronJob, name)
    if cronjob is None:
        # The permission first, so a name's existence is told only to who may read it.
        require(principal, "cronjobs", name, access)
        raise errors.NotFound(f"cronjob {name!r} not found")
    require_owner_or(
        principal, owner_id=cronjob.owner_id, resource="cronjobs", resource_id=name, access=access
    )
    return cronjob


async def get_cronjob(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        cronjob = await _load(request, session, write=False)
    return web.json_response(dump(CronJobPublic.model_validate(cronjob)))


def _only_disables(body: dict[str, Any], cronjob: CronJob) -> bool:
    if not set(body) <= HARMLESS_FIELDS:
        return False
    return body.get("disable", True) is True or cronjob.disable is False


async def update_cronjob(request: web.Request) -> web.Response:
    body = await read_body(request, CronJobUpdate)
    data = validate(CronJobUpdate, body)
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        cronjob = await _load(request, session, write=True)
        same_name(body, cronjob.name)
        if "owner" in body and body["owner"] != cronjob.owner:
            raise errors.InvalidInput("owner cannot be changed")
        harmless = _only_disables(body, cronjob)
        # Checked before anything is written: a refused change must not be half-flushed.
        with session.no_autoflush:
            _apply(cronjob, data)
            if not harmless:
                await _check_runnable(session, principal, cronjob.task, cronjob.extra_vars)
        cronjob.updated_at = utcnow()
        session.add(cronjob)
        await session.commit()
    return web.json_response(dump(CronJobPublic.model_validate(cronjob)))


async def delete_cronjob(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        cronjob = await _load(request, session, write=True)
        await session.delete(cronjob)
        await session.commit()
    return web.json_response(dump(DeletedOut(msg="cronjob deleted successfully", id=cronjob.name)))


async def get_cronjob_schema(request: web.Request) -> web.Response:
    """The schema of the cronjob's task (Kriten's route): what `extra_vars` must satisfy."""
    async with request.app[SESSIONS]() as session:
        cronjob = await _load(request, session, write=False)
        task = await session.get(Task, cronjob.task)
    return web.json_response(dump(JsonSchemaOut(task.schema_ if task is not None else None)))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/cronjobs", f"{base}/cronjobs/{{name}}"
    route(
        app,
        "GET",
        items,
        list_cronjobs,
        summary="List cronjobs",
        response=CronJobPublic,
        listing=True,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_cronjob,
            summary="Create a cronjob",
            request=CronJobCreate,
            response=CronJobPublic,
            errors=[409],
        )
    route(app, "GET", item, get_cronjob, summary="Get a cronjob", response=CronJobPublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_cronjob,
            summary="Update a cronjob (a merge)",
            request=CronJobUpdate,
            response=CronJobPublic,
        )
    route(app, "DELETE", item, delete_cronjob, summary="Delete a cronjob", response=DeletedOut)
    route(
        app,
        "GET",
        f"{item}/schema",
        get_cronjob_schema,
        summary="The input schema of a cronjob's task",
        response=JsonSchemaOut,
    )
