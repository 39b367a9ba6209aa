"""`POST /api/v1/webhooks/run/{id}`: the front door for senders.

In order: size cap (413) → webhook lookup (404) → signature and replay window (401) →
admission: owner's permission (403), input schema (400), job id from the delivery's
idempotency key → publish with confirm (503 if the broker is down) → 202.
"""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from kriten_common import errors
from kriten_common.admission import admit
from kriten_common.logging import get_logger
from kriten_ingress.keys import CONFIGS, METRICS, PUBLISHER, SETTINGS
from kriten_ingress.signatures import VerificationFailed, verify

log = get_logger(__name__)
AUTHENTICATION_FAILED = "webhook authentication failed."


async def read_capped_body(request: web.Request, cap: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `cap` bytes."""
    declared = request.content_length
    if declared is not None and declared > cap:
        raise errors.PayloadTooLarge(f"request body exceeds {cap} bytes")
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise errors.PayloadTooLarge(f"request body exceeds {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def run_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    webhook_id = request.match_info["webhook_id"]
    try:
        body = await read_capped_body(request, settings.max_body_bytes)
    except errors.PayloadTooLarge:
        metrics.deliveries.labels("rejected", "unknown").inc()
        raise
    config = await request.app[CONFIGS].get(webhook_id)
    if config is None:
        raise errors.NotFound("webhook not found")
    started = time.perf_counter()
    try:
        verified = verify(
            configured_scheme=config.scheme,
            headers=request.headers,
            body=body,
            secrets=config.secrets,
            now=time.time(),
            replay_window_seconds=settings.replay_window_seconds,
        )
    except VerificationFailed as failure:
        metrics.deliveries.labels("rejected", config.scheme).inc()
        log.info("webhook_rejected", webhook_id=webhook_id, reason=failure.reason)
        raise errors.NotAuthenticated(AUTHENTICATION_FAILED) from None
    finally:
        metrics.verification_seconds.observe(time.perf_counter() - started)
    if config.owner is None or config.task is None:
        metrics.deliveries.labels("rejected", verified.scheme).inc()
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)
    delivery_id = str(uuid.uuid4())
    event = admit(
        principal=config.owner,
        task=config.task,
        raw_input=body,
        source="webhook",
        idempotency_key=f"{webhook_id}:{verified.idempotency_key}",
        webhook_id=webhook_id,
        delivery_id=delivery_id,
        correlation_id=delivery_id,
    )
    published = time.perf_counter()
    await request.app[PUBLISHER].publish(event)
    metrics.publish_seconds.observe(time.perf_counter() - published)
    metrics.deliveries.labels("accepted", verified.scheme).inc()
    log.info("webhook_accepted", webhook_id=webhook_id, job_id=event.job_id, scheme=verified.scheme)
    return web.json_response(
        {"msg": "job created successfully", "id": event.job_id, "status": "accepted"}, status=202
    )
