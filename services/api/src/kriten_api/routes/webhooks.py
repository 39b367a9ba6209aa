"""`/webhooks`: signed triggers for a task, owned by the user who creates them.

The secret is shown once, in the create (and rotate) answer; it is stored encrypted and
read back masked. A webhook acts with its owner's permissions, so creating one needs
`jobs:write` on its task (not a permission on the webhook itself). Every change is
announced (`config.changed`) so the ingress replicas drop their cached copy at once.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_api.authentication import authenticate
from kriten_api.authz import require, require_owner_or, require_owner_or_admin
from kriten_api.config_events import publish_config_changed
from kriten_api.fields import MASK, optional_bool, optional_str
from kriten_api.keys import SECRET_BOX, SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import Operation, Raw, record, route
from kriten_api.schemas import DeletedOut, In, dump, read_body, validate
from kriten_api.schemas.jobs import JobAcceptedOut
from kriten_api.schemas.webhooks import RotateIn, WebhookIn, WebhookOut
from kriten_common import errors
from kriten_common.clock import utcnow
from kriten_common.db.models import Task, Webhook
from kriten_common.filter_expressions import InvalidExpression, check_expression
from kriten_common.paths import RUN_PREFIX
from kriten_common.rbac import Principal
from kriten_common.webhook_schemes import CONFIGURED_SCHEMES, MAX_BODY_BYTES

SCHEMES = tuple(CONFIGURED_SCHEMES)
MIN_SECRET_LENGTH = 8
WEAK_SECRET_LENGTH = 16
MAX_FILTER_LENGTH = 2048
# The ingress refuses any body declared larger than this before looking a webhook up.
MAX_RATE_PER_SECOND = 1_000_000.0
MAX_ALLOWED_SOURCES = 256
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400


def run_url(request: web.Request, webhook_id: str) -> str:
    base = request.app[SETTINGS].public_url
    if not base:
        base = f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}{RUN_PREFIX}/{webhook_id}"


def webhook_json(
    request: web.Request,
    hook: Webhook,
    *,
    secret: str = MASK,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    expires = hook.previous_secret_expires_at
    model = WebhookOut(
        id=hook.id,
        owner=hook.owner_id,
        secret=secret,
        description=hook.description,
        task=hook.task,
        scheme=hook.scheme,
        filter=hook.filter,
        enabled=hook.enabled,
        url=run_url(request, hook.id),
        max_body_bytes=hook.max_body_bytes,
        rate_limit_per_second=hook.rate_limit_per_second,
        allowed_sources=hook.allowed_sources,
        previous_secret_expires_at=(
            expires.isoformat() if expires is not None and expires > utcnow() else None
        ),
        created_at=hook.created_at.isoformat(),
        updated_at=hook.updated_at.isoformat(),
    )
    if warnings:
        model.warnings = warnings
    answer: dict[str, Any] = dump(model)
    return answer


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


def check_filter(value: Any) -> str | None:
    """A JMESPath expression the ingress may evaluate on every delivery, or None for no
    filter (400 otherwise): it compiles, stays small and calls only the functions that
    cannot amplify a body (`kriten_common.filter_expressions`)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InvalidInput("filter must be a string (a JMESPath expression)")
    if len(value) > MAX_FILTER_LENGTH:
        raise errors.InvalidInput(f"filter must be at most {MAX_FILTER_LENGTH} characters")
    try:
        check_expression(value)
    except InvalidExpression as problem:
        raise errors.InvalidInput(f"filter {problem}") from None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_max_body_bytes(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidInput("max_body_bytes must be an integer")
    if not 1 <= value <= MAX_BODY_BYTES:
        raise errors.InvalidInput(f"max_body_bytes must be between 1 and {MAX_BODY_BYTES}")
    return value


def check_rate_limit(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise errors.InvalidInput("rate_limit_per_second must be a number")
    if not 0 < value <= MAX_RATE_PER_SECOND:
        raise errors.InvalidInput(
            f"rate_limit_per_second must be above 0 and at most {MAX_RATE_PER_SECOND:g}"
        )
    return float(value)


def check_allowed_sources(value: Any) -> list[str] | None:
    """CIDRs (or addresses), normalised; an empty list means no restriction."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidInput("allowed_sources must be a list of CIDRs")
    if len(value) > MAX_ALLOWED_SOURCES:
        raise errors.InvalidInput(
            f"allowed_sources must have at most {MAX_ALLOWED_SOURCES} entries"
        )
    networks = []
    for entry in value:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise errors.InvalidInput(
                f"allowed_sources: {entry!r} is not an IP address or CIDR"
            ) from None
    return networks or None


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
    if "filter" in body:
        hook.filter = check_filter(body["filter"])
    if "max_body_bytes" in body:
        hook.max_body_bytes = check_max_body_bytes(body["max_body_bytes"])
    if "rate_limit_per_second" in body:
        hook.rate_limit_per_second = check_rate_limit(body["rate_limit_per_second"])
    if "allowed_sources" in body:
        hook.allowed_sources = check_allowed_sources(body["allowed_sources"])
    # Last, after the checks above and their messages: whatever they let through still
    # has the types the document gives.
    validate(WebhookIn, body)


async def create_webhook(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    body = await read_body(request, WebhookIn)
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
    # A replica may have cached this id as unknown (someone tried it before it existed).
    await publish_config_changed(request.app, "webhook", hook.id)
    # 200 like every create, as Kriten answers it: its clients test for 200.
    return web.json_response(webhook_json(request, hook, secret=secret, warnings=warnings))


async def _list(request: web.Request, *, all_owners: bool) -> web.Response:
    principal = await authenticate(request)
    query = select(Webhook).order_by(col(Webhook.created_at))
    if all_owners:
        require(principal, "webhooks", "*", "read")
    else:
        query = query.where(Webhook.owner_id == principal.user_id)
    async with request.app[SESSIONS]() as session:
        hooks, total = await paginate(session, query.order_by(col(Webhook.id)), Window.of(request))
    return list_response([webhook_json(request, h) for h in hooks], total)


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
    return web.json_response(webhook_json(request, hook))


async def update_webhook(request: web.Request) -> web.Response:
    body = await read_body(request, WebhookIn)
    principal = await authenticate(request)
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
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
    await publish_config_changed(request.app, "webhook", hook.id)
    return web.json_response(webhook_json(request, hook))


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


def _grace_seconds(body: dict[str, Any]) -> int:
    value = body.get("grace_seconds", DEFAULT_GRACE_SECONDS)
    if value is None:
        return DEFAULT_GRACE_SECONDS
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidInput("grace_seconds must be an integer")
    if not 0 <= value <= MAX_GRACE_SECONDS:
        raise errors.InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
    return value


async def rotate_secret(request: web.Request) -> web.Response:
    """`POST /webhooks/{id}/rotate`: a new secret (shown once); the current one becomes the
    previous and keeps verifying for `grace_seconds` (0: stops at once). The owner's or an
    admin's act only: the secret signs deliveries that run as the owner."""
    body = await optional_body(request, RotateIn)
    grace = _grace_seconds(body)
    secret, warnings = _secret(body)
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
        require_owner_or_admin(await authenticate(request), owner_id=hook.owner_id)
        if grace > 0:
            hook.previous_secret_encrypted = hook.secret_encrypted
            hook.previous_secret_expires_at = utcnow() + timedelta(seconds=grace)
        else:
            hook.previous_secret_encrypted = None
            hook.previous_secret_expires_at = None
        hook.secret_encrypted = box.encrypt(secret)
        hook.updated_at = utcnow()
        session.add(hook)
        await session.commit()
    await publish_config_changed(request.app, "webhook", hook.id)
    return web.json_response(webhook_json(request, hook, secret=secret, warnings=warnings))


def add_routes(app: web.Application, base: str) -> None:
    items, item = f"{base}/webhooks", f"{base}/webhooks/{{id}}"
    route(
        app,
        "GET",
        items,
        list_own_webhooks,
        summary="List the caller's webhooks",
        response=WebhookOut,
        listing=True,
    )
    for method in ("POST", "PUT"):
        route(
            app,
            method,
            items,
            create_webhook,
            summary="Create a webhook (its secret shown once)",
            request=WebhookIn,
            response=WebhookOut,
        )
    route(
        app,
        "GET",
        f"{items}/all",
        list_all_webhooks,
        summary="List every user's webhooks",
        response=WebhookOut,
        listing=True,
    )
    route(app, "GET", item, get_webhook, summary="Get a webhook", response=WebhookOut)
    for method in ("PATCH", "PUT"):
        route(
            app,
            method,
            item,
            update_webhook,
            summary="Update a webhook (a merge)",
            request=WebhookIn,
            response=WebhookOut,
        )
    route(app, "DELETE", item, delete_webhook, summary="Delete a webhook", response=DeletedOut)
    route(
        app,
        "POST",
        f"{item}/rotate",
        rotate_secret,
        summary="Rotate a webhook's secret (the new one shown once)",
        request=RotateIn,
        request_required=False,
        response=WebhookOut,
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
