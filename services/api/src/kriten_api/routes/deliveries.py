"""A webhook's deliveries: the delivery log (read here, written by the collector), running
a logged delivery again, and test deliveries sent through the real run endpoint.

Access is the webhook's: its owner, or `webhooks:read` (reading) / `webhooks:write`
(redeliver, test). A redelivered or test body runs with the webhook owner's permissions,
as the original delivery did, so a caller who is not the owner must also hold `jobs:write`
on the webhook's task (`require_run_as_owner`): `webhooks:write` alone must not let anyone
run another user's task, as that user, with a body they chose.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from sqlmodel import col, select

from kriten_api.authentication import authenticate
from kriten_api.authz import require_run_as_owner
from kriten_api.keys import PUBLISHER, SECRET_BOX, SESSIONS, SETTINGS
from kriten_api.listing import Window, list_response, paginate
from kriten_api.openapi import Query, route
from kriten_api.routes.webhooks import load_webhook, optional_body
from kriten_api.schemas import AnyJson, dump, validate
from kriten_api.schemas.deliveries import (
    DeliveryPublic,
    DeliverySummaryPublic,
    TestDeliveryCreate,
)
from kriten_api.schemas.jobs import JobAcceptedOut
from kriten_common import errors
from kriten_common.admission import admit
from kriten_common.clock import utcnow
from kriten_common.db.models import Task, User, Webhook, WebhookDelivery
from kriten_common.logging import bind_ids, get_logger
from kriten_common.messages import WebhookDelivered
from kriten_common.paths import RUN_PREFIX
from kriten_common.rbac import load_principal
from kriten_common.webhook_schemes import CONFIGURED_SCHEMES
from kriten_common.webhook_signing import sign_github, sign_netbox, sign_standard

log = get_logger(__name__)
OUTCOMES = ("accepted", "duplicate", "filtered", "rejected")
TEST_TIMEOUT_SECONDS = 30.0


async def list_deliveries(request: web.Request) -> web.Response:
    outcome = request.query.get("outcome")
    if outcome and outcome not in OUTCOMES:
        raise errors.InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    window = Window.of(request)
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=False)
        conditions = [col(WebhookDelivery.webhook_id) == hook.id]
        if outcome:
            conditions.append(col(WebhookDelivery.outcome) == outcome)
        query = (
            select(WebhookDelivery)
            .where(*conditions)
            .order_by(col(WebhookDelivery.received_at).desc(), col(WebhookDelivery.id))
        )
        rows, total = await paginate(session, query, window)
    return list_response([dump(DeliverySummaryPublic.model_validate(r)) for r in rows], total)


async def _load_delivery(request: web.Request, *, write: bool) -> tuple[Webhook, WebhookDelivery]:
    """The URL's webhook (see `load_webhook`) and its delivery `{delivery_id}`. Writing
    (a redelivery) runs the webhook's task as its owner: see `require_run_as_owner`,
    checked before anything about the delivery is told."""
    delivery_id = request.match_info["delivery_id"]
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=write)
        if write:
            principal = await authenticate(request)
            require_run_as_owner(principal, owner_id=hook.owner_id, task=hook.task)
        row = await session.get(WebhookDelivery, delivery_id)
    if row is None or row.webhook_id != hook.id:
        raise errors.NotFound(f"delivery {delivery_id!r} not found")
    return hook, row


async def get_delivery(request: web.Request) -> web.Response:
    _, row = await _load_delivery(request, write=False)
    return web.json_response(dump(DeliveryPublic.model_validate(row)))


async def redeliver(request: web.Request) -> web.Response:
    """Runs a logged delivery's body again as a new job, answering like the run endpoint."""
    hook, original = await _load_delivery(request, write=True)
    if original.body is None:
        raise errors.Conflict("only accepted deliveries keep their body; this one cannot be rerun")
    async with request.app[SESSIONS]() as session:
        task = await session.get(Task, hook.task)
        owner = await load_principal(session, hook.owner_id)
    if task is None or owner is None:
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)
    delivery_id = str(uuid.uuid4())
    raw = original.body.encode("utf-8")
    # No idempotency key: a redelivery is asked for on purpose, so it is a new job.
    event = admit(
        principal=owner,
        task=task,
        raw_input=raw,
        source="webhook",
        webhook_id=hook.id,
        delivery_id=delivery_id,
        correlation_id=delivery_id,
    )
    # From here on this is the new delivery's story: followed by its id, as at the ingress.
    bind_ids(correlation_id=delivery_id, webhook_id=hook.id, job_id=event.job_id)
    publisher = request.app[PUBLISHER]
    await publisher.publish(event)
    record = WebhookDelivered(
        delivery_id=delivery_id,
        correlation_id=delivery_id,
        webhook_id=hook.id,
        received_at=utcnow(),
        scheme=original.scheme,
        outcome="accepted",
        reason=f"redelivery of {original.id}",
        source=request.remote,
        job_id=event.job_id,
        size=len(raw),
        headers={"x-kriten-redelivery-of": original.id},
        body=original.body,
    )
    try:
        await publisher.publish(record)
    except errors.Unavailable:
        # The job is on its way; only its log entry is missing.
        log.warning("redelivery_not_logged", webhook_id=hook.id, job_id=event.job_id)
    log.info(
        "webhook_redelivered", webhook_id=hook.id, delivery_id=original.id, job_id=event.job_id
    )
    accepted = JobAcceptedOut(msg="job created successfully", id=event.job_id, status="accepted")
    return web.json_response(dump(accepted), status=202)


# --- test deliveries ---


def signed_test_request(
    *, scheme: str, secret: str, sample: Any, now: float
) -> tuple[bytes, dict[str, str]]:
    """The body and headers a real sender of `scheme` would send (auto: Standard Webhooks)."""
    headers = {"Content-Type": "application/json", "X-Kriten-Test": "1"}
    if scheme == "netbox":
        body = json.dumps(sample).encode()  # NetBox sends spaced JSON
        headers["X-Hook-Signature"] = sign_netbox(secret, body)
    elif scheme == "github":
        body = json.dumps(sample, separators=(",", ":")).encode()
        headers["X-Hub-Signature-256"] = sign_github(secret, body)
        headers["X-GitHub-Delivery"] = str(uuid.uuid4())
        headers["X-GitHub-Event"] = "ping"
    else:
        body = json.dumps(sample, separators=(",", ":")).encode()
        message_id = f"msg_{uuid.uuid4().hex}"
        timestamp = int(now)
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign_standard(secret, message_id, timestamp, body)
    return body, headers


def sample_body(scheme: str, *, username: str, now: float) -> dict[str, Any]:
    """A small event in the shape the scheme's usual sender uses, marked as a test."""
    moment = datetime.fromtimestamp(now, UTC)
    if scheme == "netbox":
        request_id = str(uuid.uuid4())
        return {
            "event": "test",
            "timestamp": moment.isoformat(),
            "object_type": "kriten.test",
            "username": username,
            "request_id": request_id,
            "data": {"kriten_test": True},
            "snapshots": {"prechange": None, "postchange": None},
        }
    if scheme == "github":
        return {"zen": "Kriten test delivery", "kriten_test": True}
    return {
        "id": str(uuid.uuid4()),
        "event": "kriten.test",
        "occured_at": moment.isoformat(),
        "data": {"kriten_test": True},
    }


def ingress_base_url(request: web.Request) -> str:
    """KRITEN_INGRESS_URL, else the address this api serves on (development mode, where
    the ingress shares the port). Never the request's Host header, which the caller
    controls and could point the signed request anywhere."""
    configured = request.app[SETTINGS].ingress_url
    if configured:
        return configured.rstrip("/")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    return f"http://127.0.0.1:{request.app[SETTINGS].port}"


async def send_test_delivery(request: web.Request) -> web.Response:
    """`POST /webhooks/{id}/test`: signs a sample (or `{"body": ...}`) with the webhook's
    own secret, in its scheme, sends it to the run endpoint, and returns its answer. The
    delivery runs as the webhook's owner: see `require_run_as_owner`."""
    data = validate(TestDeliveryCreate, await optional_body(request, TestDeliveryCreate))
    principal_name = ""
    async with request.app[SESSIONS]() as session:
        hook = await load_webhook(request, session, write=True)
        principal = await authenticate(request)
        require_run_as_owner(principal, owner_id=hook.owner_id, task=hook.task)
        owner = await session.get(User, hook.owner_id)
        principal_name = owner.username if owner is not None else ""
    # Signed as the webhook requires; one that takes any (`auto`) gets Standard Webhooks.
    scheme = CONFIGURED_SCHEMES.get(hook.scheme) or "standard"
    now = time.time()
    sample = (
        data.body
        if "body" in data.model_fields_set
        else sample_body(scheme, username=principal_name, now=now)
    )
    secret = request.app[SECRET_BOX].decrypt(hook.secret_encrypted)
    body, headers = signed_test_request(scheme=scheme, secret=secret, sample=sample, now=now)
    url = f"{ingress_base_url(request)}{RUN_PREFIX}/{hook.id}"
    try:
        timeout = aiohttp.ClientTimeout(total=TEST_TIMEOUT_SECONDS)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.post(url, data=body, headers=headers) as response,
        ):
            status = response.status
            text = await response.text()
            retry_after = response.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as problem:
        log.warning("webhook_test_unreachable", url=url, error=str(problem) or "timeout")
        raise errors.Unavailable("the webhook run endpoint is unreachable") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"error": text[:500]}
    extra = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(answer, status=status, headers=extra)


def add_routes(app: web.Application, base: str) -> None:
    hook = f"{base}/webhooks/{{id}}"
    delivery = f"{hook}/deliveries/{{delivery_id}}"
    route(
        app,
        "GET",
        f"{hook}/deliveries",
        list_deliveries,
        summary="A webhook's delivery log",
        response=DeliverySummaryPublic,
        listing=True,
        query=[Query("outcome", {"enum": list(OUTCOMES)}, "Only deliveries with this outcome")],
    )
    route(
        app,
        "GET",
        delivery,
        get_delivery,
        summary="A delivery, with its body",
        response=DeliveryPublic,
    )
    route(
        app,
        "POST",
        f"{delivery}/redeliver",
        redeliver,
        summary="Run an accepted delivery's body again, as a new job",
        response=JobAcceptedOut,
        status=202,
        errors=[409, 503],
    )
    route(
        app,
        "POST",
        f"{hook}/test",
        send_test_delivery,
        summary="Send a signed test delivery through the run endpoint; its answer",
        description="Answers with the run endpoint's own status and body.",
        request=TestDeliveryCreate,
        also=[202],
        request_required=False,
        response=AnyJson,
        errors=[409, 429, 503],
    )
