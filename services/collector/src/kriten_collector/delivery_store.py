"""The webhook delivery log (`webhook_deliveries`), written only here.

Each `WebhookDelivered` becomes one row keyed by its delivery id, so a redelivered
message changes nothing. Writes are group-committed (`WriteBatcher`): a batch reads what
it needs in two selects and inserts its new rows in one transaction. Rows older than
`KRITEN_DELIVERY_RETENTION_HOURS` are purged by the collector's retention loop
(`kriten_collector.retention`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_collector.write_batcher import DEFAULT_MAX_BATCH, BatchSizes, WriteBatcher
from kriten_common.db.engine import SessionFactory
from kriten_common.db.in_lists import padded
from kriten_common.db.models import WebhookDelivery
from kriten_common.messages import WebhookDelivered

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
        select(WebhookDelivery.id).where(col(WebhookDelivery.id).in_(padded(ids)))
    )
    return set(found.all())


async def _delivered_jobs(session: AsyncSession, job_ids: set[str]) -> dict[str, set[str]]:
    """For each of `job_ids` already delivered, the ids of the deliveries that ran it."""
    if not job_ids:
        return {}
    found = await session.exec(
        select(WebhookDelivery.job_id, WebhookDelivery.id).where(
            col(WebhookDelivery.job_id).in_(padded(job_ids)),
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
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_sizes: BatchSizes | None = None,
    ) -> None:
        self._sessions = sessions
        self._batcher: WriteBatcher[WebhookDelivered, bool] = WriteBatcher(
            self._commit, max_batch=max_batch, batch_sizes=batch_sizes
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
