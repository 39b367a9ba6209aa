"""`/webhooks`: signed triggers for a task, owned by the user who creates them.

The secret is shown once, in the create answer; it is stored encrypted and read back
masked. A webhook acts with its owner's permissions, so creating one needs `jobs:write`
on its task (not a permission on the webhook itself).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.access import MASK, list_response, optional_bool, optional_str, page, require
from kriten_api.authentication import authenticate
from kriten_api.keys import SECRET_BOX, SESSIONS, SETTINGS
from kriten_common import errors
from kriten_common.db.models import Task, Webhook, utcnow
from kriten_common.http import read_json_object
from kriten_common.rbac import Principal

RUN_PATH = "/api/v1/webhooks/run/"
SCHEMES = ("auto", "infrahub", "standard", "netbox", "github")
MIN_SECRET_LENGTH = 8
WEAK_SECRET_LENGTH = 16


def run_url(request: web.Request, webhook_id: str) -> str:
    base = request.app[SETTINGS].public_url
    if not base:
        base = f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}{RUN_PATH}{webhook_id}"


def webhook_json(request: web.Request, hook: Webhook, *, secret: str = MASK) -> dict[str, Any]:
    return {
        "id": hook.id,
        "owner": hook.owner_id,
        "secret": secret,
        "description": hook.description,
        "task": hook.task,
        "scheme": hook.scheme,
        "filter": hook.filter,
        "enabled": hook.enabled,
        "url": run_url(request, hook.id),
        "created_at": hook.created_at.isoformat(),
        "updated_at": hook.updated_at.isoformat(),
    }


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _secret(body: dict[str, Any]) -> tuple[str, list[str]]:
    given = body.get("secret")
    if given is None or given == "":
        if "secret" in body and given == "":
            raise errors.InvalidInput(f"secret must be at least {MIN_SECRET_LENGTH} characters")
        return new_secret(), []
    if not isinstance(given, str) or len(given) < MIN_SECRET_LENGTH:
        raise errors.InvalidInput(f"secret must be at least {MIN_SECRET_LENGTH} characters")
    if len(given) < WEAK_SECRET_LENGTH:
        return given, [f"secret is shorter than {WEAK_SECRET_LENGTH} characters"]
    return given, []


async def _check_task(session: AsyncSession, principal: Principal, task: str) -> None:
    if await session.get(Task, task) is None:
        raise errors.InvalidInput(f"task {task!r} does not exist")
    require(principal, "jobs", task, "write")


def _apply(hook: Webhook, body: dict[str, Any]) -> None:
    if "description" in body:
        hook.description = optional_str(body, "description") or ""
    if "scheme" in body:
        scheme = body["scheme"] or "auto"
        if scheme not in SCHEMES:
            raise errors.InvalidInput(f"scheme must be one of {', '.join(SCHEMES)}")
        hook.scheme = scheme
    if "enabled" in body:
        hook.enabled = optional_bool(body, "enabled", True)
    if body.get("filter") not in (None, ""):
        # Evaluating filters belongs to the ingress's filter support; refusing beats
        # silently running jobs the user meant to filter out.
        raise errors.InvalidInput("filter is not supported by this server yet")


async def create_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_json_object(request)
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise errors.InvalidInput("task is required")
    secret, warnings = _secret(body)
    box = request.app[SECRET_BOX]
    hook = Webhook(owner_id=principal.user_id, task=task, secret_encrypted=box.encrypt(secret))
    _apply(hook, body)
    async with request.app[SESSIONS]() as session:
        await _check_task(session, principal, task)
        session.add(hook)
        await session.commit()
    answer = webhook_json(request, hook, secret=secret)
    if warnings:
        answer["warnings"] = warnings
    return web.json_response(answer, status=201)


async def _list(request: web.Request, *, all_owners: bool) -> web.Response:
    principal = await authenticate(request)
    query = select(Webhook).order_by(col(Webhook.created_at))
    if all_owners:
        require(principal, "webhooks", "*", "read")
    else:
        query = query.where(Webhook.owner_id == principal.user_id)
    async with request.app[SESSIONS]() as session:
        hooks = (await session.exec(query)).all()
    items = [webhook_json(request, h) for h in page(hooks, request)]
    return list_response(items, len(hooks))


async def list_own_webhooks(request: web.Request) -> web.Response:
    return await _list(request, all_owners=False)


async def list_all_webhooks(request: web.Request) -> web.Response:
    return await _list(request, all_owners=True)


async def _load(request: web.Request, session: AsyncSession, *, write: bool) -> Webhook:
    principal = await authenticate(request)
    webhook_id = request.match_info["id"]
    hook = await session.get(Webhook, webhook_id)
    if hook is None:
        raise errors.NotFound(f"webhook {webhook_id!r} not found")
    if hook.owner_id != principal.user_id:
        require(principal, "webhooks", hook.id, "write" if write else "read")
    return hook


async def get_webhook(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        hook = await _load(request, session, write=False)
    return web.json_response(webhook_json(request, hook))


async def update_webhook(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        hook = await _load(request, session, write=True)
        if "task" in body and body["task"] != hook.task:
            task = body["task"]
            if not isinstance(task, str):
                raise errors.InvalidInput("task must be a string")
            await _check_task(session, principal, task)
            hook.task = task
        _apply(hook, body)
        hook.updated_at = utcnow()
        session.add(hook)
        await session.commit()
    return web.json_response(webhook_json(request, hook))


async def delete_webhook(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        hook = await _load(request, session, write=True)
        await session.delete(hook)
        await session.commit()
    return web.json_response({"msg": "webhook deleted successfully", "id": hook.id})


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_get(f"{base}/webhooks", list_own_webhooks)
    app.router.add_post(f"{base}/webhooks", create_webhook)
    app.router.add_put(f"{base}/webhooks", create_webhook)
    app.router.add_get(f"{base}/webhooks/all", list_all_webhooks)
    app.router.add_get(f"{base}/webhooks/{{id}}", get_webhook)
    app.router.add_patch(f"{base}/webhooks/{{id}}", update_webhook)
    app.router.add_put(f"{base}/webhooks/{{id}}", update_webhook)
    app.router.add_delete(f"{base}/webhooks/{{id}}", delete_webhook)
