"""The webhook delivery log (`webhook_deliveries`), written only here.

Each `WebhookDelivered` becomes one row keyed by its delivery id, so a redelivered
message changes nothing. Rows older than the retention are purged, at most once per
`purge_interval_seconds`, by the same consumer that writes them (no extra loop to run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import WebhookDelivery, utcnow
from kriten_common.logging import get_logger
from kriten_common.messages import WebhookDelivered

log = get_logger(__name__)


def delivery_row(event: WebhookDelivered) -> WebhookDelivery:
    return WebhookDelivery(
        id=event.delivery_id,
        webhook_id=event.webhook_id,
        received_at=event.received_at,
        scheme=event.scheme,
        outcome=event.outcome,
        reason=event.reason,
        source=event.source,
        idempotency_key=event.idempotency_key,
        job_id=event.job_id,
        size=event.size,
        secret_matched=event.secret_matched,
        headers=dict(event.headers),
        # The log keeps bodies only of deliveries that ran (they can be run again).
        body=event.body if event.outcome == "accepted" else None,
    )


async def _job_already_delivered(session: AsyncSession, row: WebhookDelivery) -> bool:
    earlier = select(WebhookDelivery.id).where(
        WebhookDelivery.job_id == row.job_id,
        col(WebhookDelivery.outcome).in_(("accepted", "duplicate")),
        WebhookDelivery.id != row.id,
    )
    return (await session.exec(earlier.limit(1))).first() is not None


class DeliveryStore:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        retention: timedelta,
        purge_interval_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._retention = retention
        self._purge_interval = purge_interval_seconds
        self._clock = clock
        self._last_purge: float | None = None

    async def record(self, event: WebhookDelivered) -> bool:
        """Stores the delivery; False when it was already stored (a redelivery).

        An `accepted` delivery whose job an earlier delivery already produced is stored as
        `duplicate`: a sender's retry that reached another ingress replica (or came after
        a restart) was answered `accepted`, with the same job id, since the ingress keeps
        the database off its request path; this is where the log learns the truth."""
        async with self._sessions() as session:
            if await session.get(WebhookDelivery, event.delivery_id) is not None:
                stored = False
            else:
                row = delivery_row(event)
                if row.outcome == "accepted" and await _job_already_delivered(session, row):
                    row.outcome, row.body = "duplicate", None
                session.add(row)
                try:
                    await session.commit()
                    stored = True
                except IntegrityError:
                    stored = False  # the same message handled concurrently
        await self._maybe_purge()
        return stored

    async def _maybe_purge(self) -> None:
        now = self._clock()
        if self._last_purge is not None and now - self._last_purge < self._purge_interval:
            return
        self._last_purge = now
        try:
            await self.purge(older_than=utcnow() - self._retention)
        except Exception:
            # Purging is housekeeping: a failure must not make the delivery retry.
            log.exception("delivery_purge_failed")

    async def purge(self, *, older_than: datetime) -> int:
        """Deletes deliveries received before `older_than`; returns how many."""
        async with self._sessions() as session:
            result = await session.exec(
                delete(WebhookDelivery).where(col(WebhookDelivery.received_at) < older_than)
            )
            await session.commit()
        count: int = result.rowcount
        if count:
            log.info("deliveries_purged", count=count, older_than=older_than.isoformat())
        return count
