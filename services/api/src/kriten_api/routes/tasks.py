"""`/tasks`: a command run on a runner, with an optional JSON Schema for its input and
optional completion callbacks (their secret and delivery log: `routes/task_callbacks.py`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import may, require, require_runner_use, visible_to
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import same_name
from kriten_api.keys import SECRET_BOX, SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import route
from kriten_api.schemas import DeletedOut, JsonObjectIn, JsonSchemaOut, dump, read_body, validate
from kriten_api.schemas.tasks import TaskBase, TaskCreate, TaskPublic, TaskUpdate
from kriten_common import errors
from kriten_common.callbacks import new_secret, refused_literal, shown_url
from kriten_common.client_address import IPNetwork
from kriten_common.clock import utcnow
from kriten_common.db.models import CronJob, Runner, Task, Webhook
from kriten_common.http import read_json_object
from kriten_common.rbac import Principal
from kriten_common.task_schemas import check_schema


async def _apply(
    session: AsyncSession,
    task: Task,
    data: TaskBase,
    *,
    principal: Principal,
    allowed: tuple[IPNetwork, ...],
) -> None:
    """The fields `data` was given, onto `task`: the checks that need the database or the
    caller are here, the others in the model."""
    given = data.model_fields_set
    if data.runner is not None:
        # Only a new runner is checked (a create's task has none yet): sending a task back
        # as read, its runner unchanged, needs no right on the runner. The permission
        # first, so that a runner's existence is told only to whoever may use it.
        if data.runner != task.runner:
            require_runner_use(principal, data.runner)
        if await session.get(Runner, data.runner) is None:
            raise errors.InvalidInput(f"runner {data.runner!r} does not exist")
        task.runner = data.runner
    if data.command is not None:
        # The command decides what the runner's secrets are used for: changing it is
        # using the runner, as moving the task to it is.
        if data.command != task.command and task.runner:
            require_runner_use(principal, task.runner)
        task.command = data.command
    if data.synchronous is not None:
        task.synchronous = data.synchronous
    if "schema_" in given:
        task.schema_ = data.schema_ or None
    if "timeout_seconds" in given:
        task.timeout_seconds = data.timeout_seconds
    if "description" in given:
        task.description = data.description or ""
    if "concurrency_key" in given:
        task.concurrency_key = data.concurrency_key
    if "concurrency_policy" in given:
        task.concurrency_policy = data.concurrency_policy
    if "callbacks" in given:
        for callback in data.callbacks or []:
            # Here, not in the model: the operator's allowance is a setting.
            if reason := refused_literal(callback["url"], allowed):
                raise errors.InvalidInput(f"{reason} (KRITEN_CALLBACK_ALLOWED_NETWORKS)")
        task.callbacks = data.callbacks or None


async def list_tasks(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = select(Task).order_by(col(Task.name))
    query = visible_to(query, principal, "tasks", keys=[col(Task.name)])
    async with request.app[SESSIONS]() as session:
        tasks, total = await paginate(session, query, Window.of(request))
    return list_response([_read_answer(principal, t) for t in tasks], total)


async def create_task(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    require(principal, "tasks", "*", "write")
    data = validate(TaskCreate, await read_body(request, TaskCreate))
    # Every task gets its callback secret at birth, shown this once.
    secret = new_secret()
    task = Task(
        name=data.name,
        runner="",
        command="",
        callback_secret_encrypted=request.app[SECRET_BOX].encrypt(secret),
    )
    allowed = request.app[SETTINGS].callback_allowed_networks
    async with request.app[SESSIONS]() as session:
        await _apply(session, task, data, principal=principal, allowed=allowed)
        session.add(task)
        try:
            await session.commit()
        except IntegrityError:
            raise errors.Conflict(f"task {data.name!r} already exists") from None
    # The collector caches which tasks have completion callbacks: a new task's must
    # apply to its first job.
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response(task_answer(task, secret=secret))


def task_answer(task: Task, *, secret: str | None = None) -> object:
    """A task's answer; with its callback secret only when it was just made."""
    answer = TaskPublic.model_validate(task)
    if secret is not None:
        answer.callback_secret = secret
    return dump(answer)


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
    return web.json_response(_read_answer(await authenticate(request), task))


def _read_answer(principal: Principal, task: Task) -> dict[str, Any]:
    """A task as a reader gets it: the callbacks' URLs without their query (which may
    hold a receiver's token) unless the reader may change the task anyway."""
    answer: dict[str, Any] = dump(TaskPublic.model_validate(task))
    if not may(principal, "tasks", task.name, "write"):
        for callback in answer["callbacks"]:
            callback["url"] = shown_url(callback["url"])
    return answer


async def update_task(request: web.Request) -> web.Response:
    body = await read_body(request, TaskUpdate)
    async with request.app[SESSIONS]() as session:
        task = await load_task(request, session, write=True)
        # The values are checked once the caller may change the task, as before.
        data = validate(TaskUpdate, body)
        same_name(body, task.name)
        await _apply(
            session,
            task,
            data,
            principal=await authenticate(request),
            allowed=request.app[SETTINGS].callback_allowed_networks,
        )
        secret = None
        if task.callbacks and task.callback_secret_encrypted is None:
            # A task made before callbacks existed gets its secret with its first ones.
            secret = new_secret()
            task.callback_secret_encrypted = request.app[SECRET_BOX].encrypt(secret)
        task.updated_at = utcnow()
        session.add(task)
        await session.commit()
    await publish_config_changed(request.app, "task", task.name)
    return web.json_response(task_answer(task, secret=secret))


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
    await publish_config_changed(request.app, "task", task.name)
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
    route(app, "GET", items, list_tasks, summary="List tasks", response=TaskPublic, listing=True)
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_task,
            summary="Create a task",
            request=TaskCreate,
            response=TaskPublic,
            errors=[409],
        )
    route(app, "GET", item, get_task, summary="Get a task", response=TaskPublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_task,
            summary="Update a task (a merge)",
            request=TaskUpdate,
            response=TaskPublic,
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
