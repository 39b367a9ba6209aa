"""`/tasks`: a command run on a runner, with an optional JSON Schema for its input."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_runner_use, visible_to
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import check_name, optional_bool, optional_str, required_str, same_name
from kriten_api.keys import SESSIONS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, JsonObjectIn, JsonSchemaOut, dump, read_body, validate
from kriten_api.schemas.tasks import TaskIn, TaskOut
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import CronJob, Runner, Task, Webhook
from kriten_common.http import read_json_object
from kriten_common.rbac import Principal
from kriten_common.task_schemas import check_schema


def task_json(task: Task) -> dict[str, Any]:
    answer: dict[str, Any] = dump(
        TaskOut(
            name=task.name,
            runner=task.runner,
            command=task.command,
            synchronous=task.synchronous,
            schema_=task.schema_,
            timeout_seconds=task.timeout_seconds,
            description=task.description,
            created_at=task.created_at.isoformat(),
            updated_at=task.updated_at.isoformat(),
        )
    )
    return answer


async def _apply(
    session: AsyncSession, task: Task, body: dict[str, Any], *, principal: Principal
) -> None:
    if "runner" in body:
        runner = required_str(body, "runner")
        # Only a new runner is checked (a create's task has none yet): sending a task back
        # as read, its runner unchanged, needs no right on the runner. The permission
        # first, so that a runner's existence is told only to whoever may use it.
        if runner != task.runner:
            require_runner_use(principal, runner)
        if await session.get(Runner, runner) is None:
            raise errors.InvalidInput(f"runner {runner!r} does not exist")
        task.runner = runner
    if "command" in body:
        command = required_str(body, "command")
        # The command decides what the runner's secrets are used for: changing it is
        # using the runner, as moving the task to it is.
        if command != task.command and task.runner:
            require_runner_use(principal, task.runner)
        task.command = command
    if "synchronous" in body:
        task.synchronous = optional_bool(body, "synchronous", False)
    if "schema" in body:
        schema = body["schema"]
        if schema is not None:
            check_schema(schema)
        task.schema_ = schema or None
    if "timeout_seconds" in body:
        timeout = body["timeout_seconds"]
        if timeout is not None and (
            not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout < 2**31
        ):
            raise errors.InvalidInput("timeout_seconds must be an integer from 1 to 2147483647")
        task.timeout_seconds = timeout
    if "description" in body:
        task.description = optional_str(body, "description") or ""
    # Last, after the checks above and their messages: whatever they let through still
    # has the types the document gives.
    validate(TaskIn, body)


async def list_tasks(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Task).order_by(col(Task.name))
    query = visible_to(query, principal, "tasks", keys=[col(Task.name)])
    async with request.app[SESSIONS]() as session:
        tasks, total = await paginate(session, query, Window.of(request))
    return list_response([task_json(t) for t in tasks], total)


async def create_task(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "tasks", "*", "write")
    body = await read_body(request, TaskIn)
    name = check_name(body.get("name"))
    for field in ("runner", "command"):
        required_str(body, field)
    task = Task(name=name, runner="", command="")
    async with request.app[SESSIONS]() as session:
        await _apply(session, task, body, principal=principal)
        session.add(task)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"task {name!r} already exists") from None
    return web.json_response(task_json(task))


async def load_task(request: web.Request, session: AsyncSession, *, write: bool) -> Task:
    principal = await authenticate(request)
    name = request.match_info["name"]
    require(principal, "tasks", name, "write" if write else "read")
    task = await session.get(Task, name)
    if task is None:
        raise errors.NotFound(f"task {name!r} not found")
    return task


async def get_task(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=False)
    return web.json_response(task_json(task))


async def update_task(request: web.Request) -> web.Response:
    body = await read_body(request, TaskIn)
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        same_name(body, task.name)
        await _apply(session, task, body, principal=await authenticate(request))
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response(task_json(task))


async def delete_task(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        hooks = (await session.exec(select(Webhook.id).where(Webhook.task == task.name))).all()
        crons = (await session.exec(select(CronJob.name).where(CronJob.task == task.name))).all()
        used_by = [
            f"{kind}: {', '.join(names)}"
            for kind, names in (("webhooks", hooks), ("cronjobs", crons))
            if names
        ]
        if used_by:
            raise errors.Conflict(f"task {task.name!r} is used by {'; '.join(used_by)}")
        await session.delete(task)
        await session.commit()
    return web.json_response(dump(DeletedOut(msg="task deleted successfully", id=task.name)))


async def get_schema(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=False)
    return web.json_response(dump(JsonSchemaOut(task.schema_)))


async def set_schema(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    check_schema(body)
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        task.schema_ = body
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response(dump(JsonSchemaOut(task.schema_)))


async def delete_schema(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        task.schema_ = None
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response(dump(DeletedOut(msg="schema deleted successfully", id=task.name)))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/tasks", f"{base}/tasks/{{name}}"
    schema = f"{item}/schema"
    route(app, "GET", items, list_tasks, summary="List tasks", response=TaskOut, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_task,
            summary="Create a task",
            request=TaskIn,
            response=TaskOut,
            errors=[409],
        )
    route(app, "GET", item, get_task, summary="Get a task", response=TaskOut)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_task,
            summary="Update a task (a merge)",
            request=TaskIn,
            response=TaskOut,
        )
    route(
        app,
        "DELETE",
        item,
        delete_task,
        summary="Delete a task unused by webhooks and cronjobs",
        response=DeletedOut,
        errors=[409],
    )
    route(app, "GET", schema, get_schema, summary="A task's input schema", response=JsonSchemaOut)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            schema,
            set_schema,
            summary="Set a task's input schema",
            request=JsonObjectIn,
            response=JsonSchemaOut,
        )
    route(
        app,
        "DELETE",
        schema,
        delete_schema,
        summary="Remove a task's input schema",
        response=DeletedOut,
    )
