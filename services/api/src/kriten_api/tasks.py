"""`/tasks`: a command run on a runner, with an optional JSON Schema for its input."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.access import (
    check_name,
    list_response,
    optional_bool,
    optional_str,
    page,
    readable_ids,
    require,
    required_str,
    same_name,
)
from kriten_api.authentication import authenticate
from kriten_api.config_events import publish_config_changed
from kriten_api.keys import SESSIONS
from kriten_common import errors
from kriten_common.admission import check_schema
from kriten_common.db.models import CronJob, Runner, Task, Webhook, utcnow
from kriten_common.http import read_json_object


def task_json(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "runner": task.runner,
        "command": task.command,
        "synchronous": task.synchronous,
        "schema": task.schema_,
        "timeout_seconds": task.timeout_seconds,
        "description": task.description,
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
    }


async def _apply(session: AsyncSession, task: Task, body: dict[str, Any]) -> None:
    if "runner" in body:
        runner = required_str(body, "runner")
        if await session.get(Runner, runner) is None:
            raise errors.InvalidInput(f"runner {runner!r} does not exist")
        task.runner = runner
    if "command" in body:
        task.command = required_str(body, "command")
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
            not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise errors.InvalidInput("timeout_seconds must be a positive integer")
        task.timeout_seconds = timeout
    if "description" in body:
        task.description = optional_str(body, "description") or ""


async def list_tasks(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    allowed = readable_ids(principal, "tasks")
    async with request.app[SESSIONS]() as session:
        query = select(Task).order_by(col(Task.name))
        if allowed is not None:
            query = query.where(col(Task.name).in_(allowed))
        tasks = (await session.exec(query)).all()
    return list_response([task_json(t) for t in page(tasks, request)], len(tasks))


async def create_task(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "tasks", "*", "write")
    body = await read_json_object(request)
    name = check_name(body.get("name"))
    for field in ("runner", "command"):
        required_str(body, field)
    task = Task(name=name, runner="", command="")
    async with request.app[SESSIONS]() as session:
        await _apply(session, task, body)
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
    body = await read_json_object(request)
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        same_name(body, task.name)
        await _apply(session, task, body)
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
    return web.json_response({"msg": "task deleted successfully", "id": task.name})


async def get_schema(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=False)
    return web.json_response(task.schema_)


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
    return web.json_response(task.schema_)


async def delete_schema(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        task.schema_ = None
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response({"msg": "schema deleted successfully", "id": task.name})


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/tasks", list_tasks)
    app.router.add_post(f"{base}/tasks", create_task)
    app.router.add_put(f"{base}/tasks", create_task)
    app.router.add_get(f"{base}/tasks/{{name}}", get_task)
    app.router.add_patch(f"{base}/tasks/{{name}}", update_task)
    app.router.add_put(f"{base}/tasks/{{name}}", update_task)
    app.router.add_delete(f"{base}/tasks/{{name}}", delete_task)
    app.router.add_get(f"{base}/tasks/{{name}}/schema", get_schema)
    app.router.add_post(f"{base}/tasks/{{name}}/schema", set_schema)
    app.router.add_put(f"{base}/tasks/{{name}}/schema", set_schema)
    app.router.add_delete(f"{base}/tasks/{{name}}/schema", delete_schema)
