"""The webhook delivery log (`webhook_deliveries`), written only here.

Each `WebhookDelivered` becomes one row keyed by its delivery id, so a redelivered
message changes nothing. Writes are group-committed (`WriteBatcher`): a batch reads what
it needs in two selects and inserts its new rows in one transaction. Rows older than the
retention are purged, at most once per `purge_interval_seconds`, by the same writer (no
extra loop to run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_collector.write_batcher import DEFAULT_MAX_BATCH, WriteBatcher
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import WebhookDelivery
from kriten_common.logging import get_logger
from kriten_common.messages import WebhookDelivered

log = get_logger(__name__)
# Another replica storing the same delivery between a batch's read and its insert is
# retried with a fresh read; this many times in a row means something else is wrong.
INSERT_ATTEMPTS = 3
# Outcomes that mean "this delivery's job was run": a later one for the same job is a retry.
_DELIVERED = ("accepted", "duplicate")


def delivery_values(event: WebhookDelivered) -> dict[str, Any]:
    """The row of a delivery, as column values: inserted without building ORM objects,
    which cost more than the insert itself."""
    return {
        "id": event.delivery_id,
        "webhook_id": event.webhook_id,
        "received_at": event.received_at,
        "scheme": event.scheme,
        "outcome": event.outcome,
        "reason": event.reason,
        "source": event.source,
        "idempotency_key": event.idempotency_key,
        "job_id": event.job_id,
        "size": event.size,
        "secret_matched": event.secret_matched,
        "headers": dict(event.headers),
        # The log keeps bodies only of deliveries that ran (they can be run again).
        "body": event.body if event.outcome == "accepted" else None,
    }


async def _stored_ids(session: AsyncSession, ids: set[str]) -> set[str]:
    found = await session.exec(
        select(WebhookDelivery.id).where(col(WebhookDelivery.id).in_(sorted(ids)))
    )
    return set(found.all())


async def _delivered_jobs(session: AsyncSession, job_ids: set[str]) -> dict[str, set[str]]:
    """For each of `job_ids` already delivered, the ids of the deliveries that ran it."""
    if not job_ids:
        return {}
    found = await session.exec(
        select(WebhookDelivery.job_id, WebhookDelivery.id).where(
            col(WebhookDelivery.job_id).in_(sorted(job_ids)),
            col(WebhookDelivery.outcome).in_(_DELIVERED),
        )
    )
    delivered: dict[str, set[str]] = {}
    for job_id, delivery_id in found.all():
        if job_id is not None:
            delivered.setdefault(job_id, set()).add(delivery_id)
    return delivered


class DeliveryStore:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        retention: timedelta,
        purge_interval_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._sessions = sessions
        self._retention = retention
        self._purge_interval = purge_interval_seconds
        self._clock = clock
        self._last_purge: float | None = None
        self._batcher: WriteBatcher[WebhookDelivered, bool] = WriteBatcher(
            self._commit, max_batch=max_batch
        )

    async def record(self, event: WebhookDelivered) -> bool:
        """Stores the delivery; False when it was already stored (a redelivery).

        An `accepted` delivery whose job an earlier delivery already produced is stored as
        `duplicate`: a sender's retry that reached another ingress replica (or came after
        a restart) was answered `accepted`, with the same job id, since the ingress keeps
        the database off its request path; this is where the log learns the truth."""
        return await self._batcher.write(event)

    async def _commit(self, events: Sequence[WebhookDelivered]) -> list[bool]:
        conflict: IntegrityError | None = None
        for _attempt in range(INSERT_ATTEMPTS):
            try:
                stored = await self._insert_new(events)
            except IntegrityError as problem:
                conflict = problem  # stored concurrently by another replica: read again
                continue
            # Before the callers are released, as when each record purged in its turn.
            await self._maybe_purge()
            return stored
        raise RuntimeError(f"could not record a batch of {len(events)} deliveries") from conflict

    async def _insert_new(self, events: Sequence[WebhookDelivered]) -> list[bool]:
        async with self._sessions() as session:
            known = await _stored_ids(session, {event.delivery_id for event in events})
            delivered = await _delivered_jobs(
                session,
                {e.job_id for e in events if e.outcome == "accepted" and e.job_id is not None},
            )
            rows: list[dict[str, Any]] = []
            stored: list[bool] = []
            for event in events:
                if event.delivery_id in known:
                    stored.append(False)  # a redelivery, maybe of one earlier in this batch
                    continue
                known.add(event.delivery_id)
                row = delivery_values(event)
                job_id = row["job_id"]
                if job_id is not None and row["outcome"] == "accepted" and delivered.get(job_id):
                    row["outcome"], row["body"] = "duplicate", None
                if job_id is not None and row["outcome"] in _DELIVERED:
                    delivered.setdefault(job_id, set()).add(row["id"])
                rows.append(row)
                stored.append(True)
            if rows:
                # One batched insert, on the session's connection (Core, not the ORM).
                connection = await session.connection()
                await connection.execute(insert(WebhookDelivery), rows)
                await session.commit()
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
