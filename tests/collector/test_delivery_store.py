"""The delivery log's store on each database: idempotent by delivery id, bodies only for
accepted deliveries; and the collector routing to it. (Its purge: test_retention.py.)"""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from kriten_collector.collecting import Collector
from kriten_collector.delivery_store import DeliveryStore
from kriten_collector.job_store import JobStore
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import WebhookDelivery
from kriten_common.messages import WebhookDelivered


def delivered(delivery_id: str, *, outcome: str = "accepted", **fields: Any) -> WebhookDelivered:
    values: dict[str, Any] = {
        "delivery_id": delivery_id,
        "webhook_id": "hook-1",
        "received_at": utcnow(),
        "scheme": "netbox",
        "outcome": outcome,
        "size": 12,
        "headers": {"x-hook-signature": "3d85…"},
        "body": '{"event": 1}',
        **fields,
    }
    return WebhookDelivered(**values)


async def rows(sessions: SessionFactory) -> list[WebhookDelivery]:
    async with sessions() as session:
        return list((await session.exec(select(WebhookDelivery))).all())


async def test_a_delivery_is_stored_once(db_sessions: SessionFactory) -> None:
    store = DeliveryStore(db_sessions)
    event = delivered("d-1", job_id="hello-abc", secret_matched="previous", source="10.0.0.1")
    assert await store.record(event)
    assert not await store.record(event)  # the broker redelivered the message
    (row,) = await rows(db_sessions)
    assert (row.id, row.outcome, row.job_id, row.secret_matched, row.source) == (
        "d-1",
        "accepted",
        "hello-abc",
        "previous",
        "10.0.0.1",
    )
    assert row.body == '{"event": 1}'
    assert row.headers == {"x-hook-signature": "3d85…"}
    assert row.received_at == event.received_at


async def test_only_accepted_deliveries_keep_their_body(db_sessions: SessionFactory) -> None:
    store = DeliveryStore(db_sessions)
    for outcome in ("accepted", "duplicate", "filtered", "rejected"):
        await store.record(delivered(outcome, outcome=outcome, reason="why"))
    bodies = {row.outcome: row.body for row in await rows(db_sessions)}
    assert bodies == {
        "accepted": '{"event": 1}',
        "duplicate": None,
        "filtered": None,
        "rejected": None,
    }


async def test_a_retry_accepted_by_another_replica_is_logged_duplicate(
    db_sessions: SessionFactory,
) -> None:
    store = DeliveryStore(db_sessions)
    await store.record(delivered("first", job_id="hello-abc"))
    await store.record(delivered("retry", job_id="hello-abc"))
    await store.record(delivered("other", job_id="hello-xyz"))
    outcomes = {row.id: (row.outcome, row.body) for row in await rows(db_sessions)}
    assert outcomes == {
        "first": ("accepted", '{"event": 1}'),
        "retry": ("duplicate", None),
        "other": ("accepted", '{"event": 1}'),
    }


async def test_the_collector_stores_delivery_events(db_sessions: SessionFactory) -> None:
    store = DeliveryStore(db_sessions)
    collector = Collector(
        store=JobStore(db_sessions),
        publisher=None,  # type: ignore[arg-type]  (not used for delivery events)
        observer=None,  # type: ignore[arg-type]
        deliveries=store,
    )
    await collector.handle(delivered("via-handle", outcome="rejected", reason="bad signature"))
    (row,) = await rows(db_sessions)
    assert (row.id, row.reason, row.body) == ("via-handle", "bad signature", None)
