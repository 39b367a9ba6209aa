"""`/cronjobs`: a task run on a cron schedule, as the user who created the cronjob.

The dispatcher's scheduler reads these rows and fires them; this module only validates and
stores them. A cronjob runs with its owner's permissions, so (as for webhooks) creating one
needs `jobs:write` on its task, and so does any later change to what it runs or when:
otherwise a user with only `cronjobs:write` could make another user's cronjob run a task,
or an input, that its owner may run and they may not. Disabling alone needs no `jobs:write`.
Owners manage their own cronjobs without any role; `cronjobs:read`/`write` reach others'.

Schedules are standard 5-field cron expressions (minute, hour, day of month, month, day of
week), evaluated in UTC, parsed with `cronsim` (the same library the scheduler uses).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cronsim import CronSim, CronSimError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_owner_or, visible_to
from kriten_api.fields import check_name, optional_bool, required_str, same_name
from kriten_api.keys import SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, JsonSchemaOut, dump, read_body, validate
from kriten_api.schemas.cronjobs import CronJobIn, CronJobOut
from kriten_common import errors
from kriten_common.admission import validate_input
from kriten_common.clock import utcnow
from kriten_common.db.models import CronJob, Task
from kriten_common.rbac import Access, Principal

CRON_FIELDS = 5
# Changes that cannot make a cronjob run anything it would not have run anyway.
HARMLESS_FIELDS = frozenset({"name", "owner", "disable"})


def cronjob_json(cronjob: CronJob) -> dict[str, Any]:
    answer: dict[str, Any] = dump(
        CronJobOut(
            name=cronjob.name,
            owner=cronjob.owner,
            task=cronjob.task,
            schedule=cronjob.schedule,
            disable=cronjob.disable,
            extra_vars=cronjob.extra_vars,
            created_at=cronjob.created_at.isoformat(),
            updated_at=cronjob.updated_at.isoformat(),
        )
    )
    return answer


def check_schedule(value: Any, *, now: datetime | None = None) -> str:
    """A 5-field cron expression that fires at least once; `InvalidInput` otherwise."""
    message = (
        "schedule must be a 5-field cron expression (minute hour day-of-month month"
        " day-of-week), e.g. '*/5 * * * *'"
    )
    if not isinstance(value, str):
        raise errors.InvalidInput(message)
    schedule = " ".join(value.split())
    # cronsim also takes a 6-field form with seconds; the contract is 5 fields.
    if len(schedule.split(" ")) != CRON_FIELDS:
        raise errors.InvalidInput(message)
    try:
        next(CronSim(schedule, now or datetime.now(UTC)))
    except CronSimError as problem:
        raise errors.InvalidInput(f"{message}: {str(problem).lower()}") from None
    except StopIteration:
        raise errors.InvalidInput(f"schedule {schedule!r} never fires") from None
    return schedule


def check_extra_vars(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidInput("extra_vars must be a JSON object")
    return value


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


def _apply(cronjob: CronJob, body: dict[str, Any]) -> None:
    if "task" in body:
        cronjob.task = required_str(body, "task")
    if "schedule" in body:
        cronjob.schedule = check_schedule(body["schedule"])
    if "disable" in body:
        cronjob.disable = optional_bool(body, "disable", False)
    if "extra_vars" in body:
        cronjob.extra_vars = check_extra_vars(body["extra_vars"])
    # Last, after the checks above and their messages: whatever they let through still
    # has the types the document gives.
    validate(CronJobIn, body)


async def list_cronjobs(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(CronJob).order_by(col(CronJob.name))
    keys, owner = [col(CronJob.name)], col(CronJob.owner_id)
    query = visible_to(query, principal, "cronjobs", keys=keys, owner=owner)
    async with request.app[SESSIONS]() as session:
        cronjobs, total = await paginate(session, query, Window.of(request))
    return list_response([cronjob_json(c) for c in cronjobs], total)


async def create_cronjob(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_body(request, CronJobIn)
    now = utcnow()
    cronjob = CronJob(
        name=check_name(body.get("name")),
        owner=principal.username,
        owner_id=principal.user_id,
        task=required_str(body, "task"),
        schedule=check_schedule(body.get("schedule")),
        created_at=now,
        updated_at=now,
    )
    _apply(cronjob, {k: v for k, v in body.items() if k in ("disable", "extra_vars")})
    async with request.app[SESSIONS]() as session:
        await _check_runnable(session, principal, cronjob.task, cronjob.extra_vars)
        if await session.get(CronJob, cronjob.name) is not None:
            raise errors.Conflict(f"cronjob {cronjob.name!r} already exists")
        session.add(cronjob)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"cronjob {cronjob.name!r} already exists") from None
    return web.json_response(cronjob_json(cronjob))


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
    return web.json_response(cronjob_json(cronjob))


def _only_disables(body: dict[str, Any], cronjob: CronJob) -> bool:
    if not set(body) <= HARMLESS_FIELDS:
        return False
    return body.get("disable", True) is True or cronjob.disable is False


async def update_cronjob(request: web.Request) -> web.Response:
    body = await read_body(request, CronJobIn)
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        cronjob = await _load(request, session, write=True)
        same_name(body, cronjob.name)
        if "owner" in body and body["owner"] != cronjob.owner:
            raise errors.InvalidInput("owner cannot be changed")
        harmless = _only_disables(body, cronjob)
        # Checked before anything is written: a refused change must not be half-flushed.
        with session.no_autoflush:
            _apply(cronjob, body)
            if not harmless:
                await _check_runnable(session, principal, cronjob.task, cronjob.extra_vars)
        cronjob.updated_at = utcnow()
        session.add(cronjob)
        await session.commit()
    return web.json_response(cronjob_json(cronjob))


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
        app, "GET", items, list_cronjobs, summary="List cronjobs", response=CronJobOut, listing=True
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_cronjob,
            summary="Create a cronjob",
            request=CronJobIn,
            response=CronJobOut,
            errors=[409],
        )
    route(app, "GET", item, get_cronjob, summary="Get a cronjob", response=CronJobOut)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_cronjob,
            summary="Update a cronjob (a merge)",
            request=CronJobIn,
            response=CronJobOut,
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
