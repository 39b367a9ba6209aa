"""The ingress's side of the delivery log: `WebhookDelivered` events, published without
holding up the answer to the sender.

A delivery-log event is a record, not the job: it goes through the group-commit
publisher in the background (an accepted delivery's rides in the same batch as its job
request, see `rider`), with a bound on how many are in flight (beyond it they are
dropped and counted), and rejected deliveries are rate limited per webhook so a flood of
bad requests cannot fill the database. Metrics count every delivery either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from kriten_common import errors
from kriten_common.amqp import Publisher, Rider
from kriten_common.logging import get_logger
from kriten_common.messages import WebhookDelivered
from kriten_ingress.limits import Buckets
from kriten_ingress.metrics import IngressMetrics

log = get_logger(__name__)

# What helps someone debug a sender's setup; nothing else is kept.
RECORDED_HEADERS = (
    "content-type",
    "content-length",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hook-signature",
    "x-hub-signature-256",
    "x-github-delivery",
    "x-github-event",
    "x-forwarded-for",
    "x-kriten-test",
)
SIGNATURE_HEADERS = frozenset({"webhook-signature", "x-hook-signature", "x-hub-signature-256"})
MAX_HEADER_CHARS = 256
_SHOWN_CHARS = 4


def redact_signature(value: str) -> str:
    """Enough of a signature to tell two apart in the log, never enough to reuse it.

    Each space-separated entry keeps its version tag (`v1,`, `sha256=`) and four
    characters of the value.
    """
    entries = []
    for entry in value.split()[:8]:
        cut = min((i for i in (entry.find(","), entry.find("=")) if i >= 0), default=-1)
        tag, rest = entry[: cut + 1], entry[cut + 1 :]
        entries.append(f"{tag}{rest[:_SHOWN_CHARS]}…" if rest else tag)
    return " ".join(entries)


def recorded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name in RECORDED_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name in SIGNATURE_HEADERS:
            value = redact_signature(value)
        kept[name] = value[:MAX_HEADER_CHARS]
    return kept


class DeliveryLog:
    """Hands delivery-log events to the group-commit publisher: one list entry each, no
    task per event; the publisher's batch is what amortises the broker's cost."""

    def __init__(
        self,
        publisher: Publisher,
        metrics: IngressMetrics,
        *,
        max_in_flight: int,
        rejected_per_second: float,
        rejected_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._rejected_rate = rejected_per_second
        self._rejected_burst = float(rejected_burst)
        self._clock = clock
        self._rejected = Buckets()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Bound once: the counters are looked up by label once, not per event.
        self._published = metrics.delivery_log.labels("published")
        self._failed = metrics.delivery_log.labels("failed")
        self._dropped = metrics.delivery_log.labels("dropped")
        self._sampled_out = metrics.delivery_log.labels("sampled_out")

    def record(self, event: WebhookDelivered) -> bool:
        """Publishes `event` in the background and returns at once: True when it was
        sent on its way, False when it was sampled out or dropped."""
        rider = self.rider(event)
        if rider is None:
            return False
        self._publisher.enqueue(rider.event, settled=rider.settled)
        return True

    def rider(self, event: WebhookDelivered) -> Rider | None:
        """`event` ready to ride in the batch of another publish (an accepted delivery's
        job request), or None when it is sampled out or dropped; counted in flight."""
        if event.outcome == "rejected":
            bucket = self._rejected.bucket(
                event.webhook_id,
                rate=self._rejected_rate,
                burst=self._rejected_burst,
                now=self._clock(),
            )
            if not bucket.take(self._clock()):
                self._sampled_out.inc()
                return None
        if self._in_flight >= self._max_in_flight:
            self._dropped.inc()
            return None
        self._in_flight += 1
        self._idle.clear()

        def settled(problem: errors.Unavailable | None) -> None:
            self._settled(event, problem)

        return Rider(event, settled)

    def _settled(self, event: WebhookDelivered, problem: errors.Unavailable | None) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        if problem is None:
            self._published.inc()
            return
        self._failed.inc()
        log.warning(
            "delivery_log_publish_failed",
            webhook_id=event.webhook_id,
            delivery_id=event.delivery_id,
            error=problem.message,
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Waits (a bounded time) for what is being published, before the publisher closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
