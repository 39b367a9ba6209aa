"""`POST /api/v1/webhooks/run/{id}`: the front door for senders.

In order: a body declared over the hard ceiling (413) → webhook lookup, cached (404; 503
when it cannot be read and no usable cached copy exists, see `webhook_config`) →
source allow-list (403) → the webhook's body cap (413, counted after any
`Content-Encoding` is undone) → signature and replay window (401) → the webhook's rate
limit (429) → filter (202 `filtered`; 400 when it is over its budget on this body) →
owner and task still there (403) → duplicate of a known job (202 `duplicate`) →
admission: owner's permission (403), input schema (400), job id from the idempotency
key → publish with confirm (503 if the broker is down) → 202 `accepted`.

Every delivery to a known webhook is recorded in the delivery log (`WebhookDelivered`)
with its precise outcome; the sender only ever sees the uniform answers above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from aiohttp import web
from prometheus_client.metrics import Counter as CounterChild

from kriten_common import errors
from kriten_common.admission import admit
from kriten_common.amqp import Publisher
from kriten_common.client_address import IPNetwork, client_address, forwarded_hops
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.ids import random_uuid
from kriten_common.logging import bind_ids, get_logger
from kriten_common.messages import WebhookDelivered
from kriten_common.webhook_schemes import MAX_BODY_BYTES
from kriten_ingress.dedupe import RecentJobs
from kriten_ingress.delivery_log import DeliveryLog, recorded_headers
from kriten_ingress.filters import FilterRefused, filter_rejection
from kriten_ingress.keys import INTAKE
from kriten_ingress.limits import Buckets, replica_rate, retry_after_seconds, source_allowed
from kriten_ingress.metrics import IngressMetrics, webhook_label
from kriten_ingress.settings import IngressSettings
from kriten_ingress.signatures import SecretMatch, VerificationFailed, verify
from kriten_ingress.webhook_config import WebhookConfig, WebhookConfigs

log = get_logger(__name__)
AUTHENTICATION_FAILED = "webhook authentication failed."
FILTER_REFUSED = "the webhook's filter cannot be evaluated on this body."
# No webhook may raise its cap above this, so a larger declared body is refused before
# the webhook is even looked up.
Outcome = Literal["accepted", "duplicate", "filtered", "rejected"]
# Bound of the per-request caches below (metric children, client addresses).
_MAX_CACHED = 4096


async def read_capped_body(request: web.Request, cap: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `cap` bytes.

    aiohttp undoes a `Content-Encoding` (gzip, deflate, br) while the body streams in,
    a bounded chunk at a time, so the cap counts decompressed bytes and a compression
    bomb is refused after inflating just past the cap. A declared length is the
    compressed size: refusing on it early is only ever stricter.
    """
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


@dataclass
class _Delivery:
    """What is known of one delivery so far, for its delivery-log entry."""

    webhook_id: str
    scheme: str
    received_at: datetime
    source: str | None
    headers: dict[str, str]
    delivery_id: str = field(default_factory=random_uuid)
    size: int = 0
    idempotency_key: str | None = None
    secret_matched: SecretMatch | None = None


@dataclass
class Intake:
    """Everything the run endpoint uses, built once per app by its cleanup context."""

    settings: IngressSettings
    metrics: IngressMetrics
    configs: WebhookConfigs
    publisher: Publisher
    sessions: SessionFactory
    delivery_log: DeliveryLog
    recent: RecentJobs
    trusted_proxies: tuple[IPNetwork, ...]
    rate_limits: Buckets = field(default_factory=Buckets)
    # The live ingress replicas sharing each webhook's rate limit (`Peers.count`).
    replicas: Callable[[], int] = field(default=lambda: 1)
    # The rate limits' clock; tests stop it.
    clock: Callable[[], float] = field(default=time.monotonic)
    _delivery_counters: dict[tuple[str, str, str], CounterChild] = field(
        default_factory=dict, init=False
    )
    _addresses: dict[tuple[str | None, tuple[str, ...]], str | None] = field(
        default_factory=dict, init=False
    )

    async def run(self, request: web.Request) -> web.Response:
        webhook_id = request.match_info["webhook_id"]
        received_at = utcnow()
        declared = request.content_length
        if declared is not None and declared > MAX_BODY_BYTES:
            self._count_unknown("too large")
            raise errors.PayloadTooLarge(f"request body exceeds {MAX_BODY_BYTES} bytes")
        try:
            config = await self.configs.get(webhook_id)
        except errors.Unavailable:
            # Not in the delivery log: whether this webhook exists is what is unknown.
            self._count_unknown("configuration unavailable")
            raise
        if config is None:
            # Not logged: rows for ids that do not exist would let anyone fill the table.
            self._count_unknown("unknown webhook")
            raise errors.NotFound("webhook not found")
        delivery = _Delivery(
            webhook_id=webhook_id,
            scheme=config.scheme,
            received_at=received_at,
            source=self._client_address(request),
            headers=recorded_headers(request.headers),
            size=declared or 0,
        )
        # A delivery's correlation id, in every service, is its delivery id.
        bind_ids(correlation_id=delivery.delivery_id, webhook_id=webhook_id)
        try:
            return await self._run(request, config, delivery)
        except errors.KritenError as error:
            self._reject(delivery, _reason(error))
            raise

    async def _run(
        self, request: web.Request, config: WebhookConfig, delivery: _Delivery
    ) -> web.Response:
        if config.allowed_sources is not None and not source_allowed(
            delivery.source, config.allowed_sources
        ):
            raise _Refused(errors.Forbidden(errors.FORBIDDEN_MESSAGE), "source not allowed")
        cap = config.max_body_bytes or self.settings.max_body_bytes
        try:
            body = await read_capped_body(request, cap)
        except errors.PayloadTooLarge as error:
            raise _Refused(error, "too large") from None
        delivery.size = len(body)

        started = time.perf_counter()
        try:
            verified = verify(
                configured_scheme=config.scheme,
                headers=request.headers,
                body=body,
                secrets=config.secrets(time.time()),
                now=time.time(),
                replay_window_seconds=self.settings.replay_window_seconds,
            )
        except VerificationFailed as failure:
            raise _Refused(errors.NotAuthenticated(AUTHENTICATION_FAILED), failure.reason) from None
        finally:
            self.metrics.verification_seconds.observe(time.perf_counter() - started)
        delivery.scheme = verified.scheme
        delivery.idempotency_key = verified.idempotency_key
        delivery.secret_matched = verified.secret_matched

        # After verification, so that someone without the secret cannot use up a
        # sender's allowance.
        self._check_rate(config)

        try:
            rejection = filter_rejection(config.filter, body)
        except FilterRefused as refused:
            raise _Refused(errors.InvalidInput(FILTER_REFUSED), refused.reason) from None
        if rejection is not None:
            self._record(self._delivered(delivery, "filtered", reason=rejection))
            return web.json_response(
                {"msg": "delivery filtered, no job created", "status": "filtered"}, status=202
            )

        task, owner = config.task, config.owner
        if owner is None or task is None:
            what = "owner" if owner is None else "task"
            raise _Refused(
                errors.Forbidden(errors.FORBIDDEN_MESSAGE), f"permission: the {what} is gone"
            )
        key = f"{delivery.webhook_id}:{verified.idempotency_key}"
        try:
            # The one decision on the job, as for every other entry: the owner's
            # permission, the input's schema, and the id derived from the delivery.
            event = admit(
                principal=owner,
                task=task,
                raw_input=body,
                source="webhook",
                idempotency_key=key,
                webhook_id=delivery.webhook_id,
                delivery_id=delivery.delivery_id,
                correlation_id=delivery.delivery_id,
            )
        except errors.Forbidden as refused:
            reason = f"permission: the owner lacks jobs:write on {task.name}"
            raise _Refused(refused, reason) from None
        bind_ids(job_id=event.job_id)
        if self._is_duplicate(event.job_id):
            self._record(self._delivered(delivery, "duplicate", job_id=event.job_id))
            log.info("webhook_duplicate", webhook_id=delivery.webhook_id, job_id=event.job_id)
            return web.json_response(
                {
                    "msg": "job already created for this delivery",
                    "id": event.job_id,
                    "status": "duplicate",
                },
                status=202,
            )
        # The delivery-log record rides in the job request's confirmed batch: one round
        # trip for both, and no background task per delivery. It is built before the
        # confirm; when the batch fails, both messages normally fail together and the
        # delivery is logged as rejected (the collector keeps the first record of a
        # delivery id, so a lone confirmed "accepted" would win; the job's idempotent
        # id makes the sender's retry safe either way).
        rider = self.delivery_log.rider(
            self._delivered(delivery, "accepted", job_id=event.job_id, body=event.input)
        )
        published = time.perf_counter()
        await self.publisher.publish(event, riders=() if rider is None else (rider,))
        self.metrics.publish_seconds.observe(time.perf_counter() - published)
        self._count_delivery(delivery.webhook_id, delivery.scheme, "accepted")
        self.recent.add(event.job_id)
        log.info(
            "webhook_accepted",
            webhook_id=delivery.webhook_id,
            job_id=event.job_id,
            scheme=verified.scheme,
        )
        return web.json_response(
            {"msg": "job created successfully", "id": event.job_id, "status": "accepted"},
            status=202,
        )

    def _check_rate(self, config: WebhookConfig) -> None:
        if not config.rate_limit_per_second:
            return
        rate, burst = replica_rate(config.rate_limit_per_second, self.replicas())
        now = self.clock()
        bucket = self.rate_limits.bucket(config.webhook_id, rate=rate, burst=burst, now=now)
        if not bucket.take(now):
            wait = retry_after_seconds(bucket.seconds_until_token(now))
            raise _Refused(
                errors.RateLimited("rate limit exceeded", retry_after=wait), "rate limited"
            )

    def _count_delivery(self, webhook_id: str, scheme: str, outcome: Outcome) -> None:
        # The labelled counter is looked up once per webhook, scheme and outcome: the
        # label is a SHA-256 and `labels()` takes a lock, too much for every delivery.
        key = (webhook_id, scheme, outcome)
        counter = self._delivery_counters.get(key)
        if counter is None:
            if len(self._delivery_counters) >= _MAX_CACHED:
                self._delivery_counters.clear()
            counter = self.metrics.deliveries.labels(webhook_label(webhook_id), scheme, outcome)
            self._delivery_counters[key] = counter
        counter.inc()

    def _client_address(self, request: web.Request) -> str | None:
        # Parsing addresses costs more than the rest of the bookkeeping; a sender
        # comes from few addresses. The key is what the answer depends on, and the
        # cache is bounded since `X-Forwarded-For` is whatever the sender writes.
        forwarded = tuple(request.headers.getall("X-Forwarded-For", ()))
        key = (request.remote, forwarded)
        if key in self._addresses:
            return self._addresses[key]
        if len(self._addresses) >= _MAX_CACHED:
            self._addresses.clear()
        found = client_address(request.remote, forwarded_hops(forwarded), self.trusted_proxies)
        self._addresses[key] = found
        return found

    def _is_duplicate(self, job_id: str) -> bool:
        if job_id in self.recent:
            self.metrics.duplicates.inc()
            return True
        return False

    def _count_unknown(self, reason: str) -> None:
        self.metrics.deliveries.labels("", "unknown", "rejected").inc()
        self.metrics.rejections.labels(reason).inc()

    def _reject(self, delivery: _Delivery, reason: str) -> None:
        # Only the fixed part of a reason labels the metric; details stay in the log.
        self.metrics.rejections.labels(reason.split(":", 1)[0]).inc()
        if self._record(self._delivered(delivery, "rejected", reason=reason)):
            # Logged as sampled as the delivery log, so a flood cannot flood the logs.
            log.info("webhook_rejected", webhook_id=delivery.webhook_id, reason=reason)

    def _record(self, event: WebhookDelivered) -> bool:
        """Counts the delivery and logs it in the background (not for accepted ones,
        whose record rides with their job request)."""
        self._count_delivery(event.webhook_id, event.scheme or "", event.outcome)
        return self.delivery_log.record(event)

    def _delivered(
        self,
        delivery: _Delivery,
        outcome: Outcome,
        *,
        reason: str | None = None,
        job_id: str | None = None,
        body: str | None = None,
    ) -> WebhookDelivered:
        """The delivery-log event (not yet counted in the deliveries metric)."""
        return WebhookDelivered(
            delivery_id=delivery.delivery_id,
            correlation_id=delivery.delivery_id,
            webhook_id=delivery.webhook_id,
            received_at=delivery.received_at,
            scheme=delivery.scheme,
            outcome=outcome,
            reason=reason,
            source=delivery.source,
            idempotency_key=delivery.idempotency_key,
            job_id=job_id,
            size=delivery.size,
            secret_matched=delivery.secret_matched,
            headers=delivery.headers,
            body=body,
        )


class _Refused(errors.KritenError):
    """A refusal carrying both the sender's error and the delivery log's reason."""

    def __init__(self, error: errors.KritenError, reason: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason


def _reason(error: errors.KritenError) -> str:
    if isinstance(error, _Refused):
        return error.reason
    if isinstance(error, errors.InvalidInput):
        return f"schema: {error.message}"
    if isinstance(error, errors.Unavailable):
        return "broker unavailable"
    return type(error).__name__


async def run_webhook(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    try:
        return await intake.run(request)
    except _Refused as refused:
        raise refused.error from None
