"""`/webhooks`: signed triggers for a task, owned by the user who creates them.

The secret is shown once, in the create (and rotate) answer; it is stored encrypted and
read back masked. A webhook acts with its owner's permissions, so creating one needs
`jobs:write` on its task (not a permission on the webhook itself). Every change is
announced (`config.changed`) so the ingress replicas drop their cached copy at once.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import own_items, require, require_owner_or, require_owner_or_admin
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import MASK
from kriten_api.keys import SECRET_BOX, SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import Operation, Raw, record, route
from kriten_api.schemas import DeletedOut, In, dump, read_body, validate
from kriten_api.schemas.jobs import JobAcceptedOut
from kriten_api.schemas.webhooks import (
    SECRET,
    URL,
    WARNINGS,
    WebhookCreate,
    WebhookPublic,
    WebhookRotate,
    WebhookUpdate,
)
from kriten_api.secret_rotation import previous_secret
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Task, Webhook
from kriten_common.paths import RUN_PREFIX
from kriten_common.rbac import Principal

WEAK_SECRET_LENGTH = 16
# What a create or an update sets as given; the task apart, as a new one needs `jobs:write`.
SETTABLE_FIELDS = (
    "description",
    "scheme",
    "filter",
    "enabled",
    "max_body_bytes",
    "rate_limit_per_second",
    "allowed_sources",
)


def run_url(request: web.Request, webhook_id: str) -> str:
    base = request.app[SETTINGS].public_url
    if not base:
        base = f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}{RUN_PREFIX}/{webhook_id}"


def webhook_public(
    request: web.Request, hook: Webhook, *, secret: str = MASK, warnings: list[str] | None = None
) -> WebhookPublic:
    context = {URL: run_url(request, hook.id), SECRET: secret, WARNINGS: warnings}
    return WebhookPublic.model_validate(hook, context=context)


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _secret(given: str | None) -> tuple[str, list[str]]:
    """The secret to set (generated when none is given) and any warning about it."""
    if given is None:
        return new_secret(), []
    if len(given) < WEAK_SECRET_LENGTH:
        return given, [f"secret is shorter than {WEAK_SECRET_LENGTH} characters"]
    return given, []


async def _check_task(session: AsyncSession, principal: Principal, task: str) -> None:
    if await session.get(Task, task) is None:
        raise errors.InvalidInput(f"task {task!r} does not exist")
    require(principal, "jobs", task, "write")


def _apply(hook: Webhook, data: WebhookCreate | WebhookUpdate) -> None:
    for field in SETTABLE_FIELDS:
        if field in data.model_fields_set:
            setattr(hook, field, getattr(data, field))


async def create_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    data = validate(WebhookCreate, await read_body(request, WebhookCreate))
    secret, warnings = _secret(data.secret)
    box = request.app[SECRET_BOX]
    hook = Webhook(owner_id=principal.user_id, task=data.task, secret_encrypted=box.encrypt(secret))
    _apply(hook, data)
    async with request.app[SESSIONS]() as session:
        await _check_task(session, principal, data.task)
        session.add(hook)
        await session.commit()
    # A replica may have cached this id as unknown (someone tried it before it existed).
    await publish_config_changed(request.app, "webhook", hook.id)
    # 200 like every create, as Kriten answers it: its clients test for 200.
    answer = webhook_public(request, hook, secret=secret, warnings=warnings)
    return web.json_response(dump(answer))


async def _list(request: web.Request, *, all_owners: bool) -> web.Response:
    principal = await authenticate(request)
    query = select(Webhook).order_by(col(Webhook.created_at))
    if all_owners:
        require(principal, "webhooks", "*", "read")
    else:
        query = own_items(query, principal, owner=col(Webhook.owner_id))
    async with request.app[SESSIONS]() as session:
        hooks, total = await paginate(session, query.order_by(col(Webhook.id)), Window.of(request))
    return list_response([dump(webhook_public(request, h)) for h in hooks], total)


async def list_own_webhooks(request: web.Request) -> web.Response:
    return await _list(request, all_owners=False)


async def list_all_webhooks(request: web.Request) -> web.Response:
    return await _list(request, all_owners=True)


async def load_webhook(request: web.Request, session: AsyncSession, *, write: bool) -> Webhook:
    """The webhook of the URL's `{id}`, if the caller owns it or holds webhooks:read/write."""
    principal = await authenticate(request)
    webhook_id = request.match_info["id"]
    hook = await session.get(Webhook, webhook_id)
    if hook is None:
        raise errors.NotFound(f"webhook {webhook_id!r} not found")
    require_owner_or(
        principal,
        owner_id=hook.owner_id,
        resource="webhooks",
        resource_id=hook.id,
        access="write" if write else "read",
    )
    return hook


async def get_webhook(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=False)
    return web.json_response(dump(webhook_public(request, hook)))


async def update_webhook(request: web.Request) -> web.Response:
    data = validate(WebhookUpdate, await read_body(request, WebhookUpdate))
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
        if data.task is not None and data.task != hook.task:
            await _check_task(session, principal, data.task)
            hook.task = data.task
        _apply(hook, data)
        hook.updated_at = utcnow()
        session.add(hook)
        await session.commit()
    await publish_config_changed(request.app, "webhook", hook.id)
    return web.json_response(dump(webhook_public(request, hook)))


async def delete_webhook(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
        await session.delete(hook)
        await session.commit()
    await publish_config_changed(request.app, "webhook", hook.id)
    return web.json_response(dump(DeletedOut(msg="webhook deleted successfully", id=hook.id)))


async def optional_body(request: web.Request, model: type[In]) -> dict[str, Any]:
    """The body as `read_body` reads it, or {} when there is no body at all."""
    if not request.can_read_body or not (await request.read()).strip():
        return {}
    return await read_body(request, model)


async def rotate_secret(request: web.Request) -> web.Response:
    """`POST /webhooks/{id}/rotate`: a new secret (shown once); the current one becomes the
    previous and keeps verifying for `grace_seconds` (0: stops at once). The owner's or an
    admin's act only: the secret signs deliveries that run as the owner."""
    data = validate(WebhookRotate, await optional_body(request, WebhookRotate))
    secret, warnings = _secret(data.secret)
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
        require_owner_or_admin(await authenticate(request), owner_id=hook.owner_id)
        hook.previous_secret_encrypted, hook.previous_secret_expires_at = previous_secret(
            hook.secret_encrypted, data.grace_seconds
        )
        hook.secret_encrypted = box.encrypt(secret)
        hook.updated_at = utcnow()
        session.add(hook)
        await session.commit()
    await publish_config_changed(request.app, "webhook", hook.id)
    answer = webhook_public(request, hook, secret=secret, warnings=warnings)
    return web.json_response(dump(answer))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/webhooks", f"{base}/webhooks/{{id}}"
    route(
        app,
        "GET",
        items,
        list_own_webhooks,
        summary="List the caller's webhooks",
        response=WebhookPublic,
        listing=True,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_webhook,
            summary="Create a webhook (its secret shown once)",
            request=WebhookCreate,
            response=WebhookPublic,
        )
    route(
        app,
        "GET",
        f"{items}/all",
        list_all_webhooks,
        summary="List every user's webhooks",
        response=WebhookPublic,
        listing=True,
    )
    route(app, "GET", item, get_webhook, summary="Get a webhook", response=WebhookPublic)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_webhook,
            summary="Update a webhook (a merge)",
            request=WebhookUpdate,
            response=WebhookPublic,
        )
    route(app, "DELETE", item, delete_webhook, summary="Delete a webhook", response=DeletedOut)
    route(
        app,
        "POST",
        f"{item}/rotate",
        rotate_secret,
        summary="Rotate a webhook's secret (the new one shown once)",
        request=WebhookRotate,
        request_required=False,
        response=WebhookPublic,
    )
    # Served by the ingress, not here; recorded so that the document covers the whole API.
    record(
        app,
        Operation(
            method="POST",
            path=f"{base}/webhooks/run/{{id}}",
            summary="Deliver an event to a webhook (served by the ingress)",
            description=(
                "Served by the ingress service, not the api. The body is the sender's event,"
                " signed with the webhook's secret in its scheme (Standard Webhooks, NetBox,"
                " GitHub); the webhook's owner runs its task with it as input."
            ),
            request=Raw("*/*", {}, "The event, as its sender signed it"),
            response=JobAcceptedOut,
            status=202,
            errors=frozenset({400, 404, 409, 413, 429, 503}),
            public=True,
            served_by="ingress",
        ),
    )
