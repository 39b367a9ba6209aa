"""The run endpoint in process, on real PostgreSQL and RabbitMQ: every outcome, what the
delivery log receives, duplicates, filters, limits and the configuration cache."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from kriten_api.bootstrap import ensure_builtins
from kriten_api.migrate import upgrade_database
from kriten_common.amqp import Topology, publish_broadcast
from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import SessionFactory, create_engine, session_factory
from kriten_common.db.models import Runner, Task, User, Webhook
from kriten_common.messages import (
    ConfigChanged,
    Event,
    JobRequested,
    WebhookDelivered,
    decode,
)
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from kriten_common.webhook_signing import sign_github
from kriten_ingress.app import create_app
from kriten_ingress.keys import INTAKE, PEERS
from kriten_ingress.metrics import webhook_label
from kriten_ingress.settings import IngressSettings
from tests.ingress.test_sender_bodies import (
    infrahub_node_update,
    infrahub_wire,
    netbox_device_update,
    netbox_wire,
)

pytestmark = pytest.mark.integration

SECRET = "the-webhook-secret-123"
RUN = "/api/v1/webhooks/run/"
Client = TestClient[Any, Any]


@dataclass
class World:
    sessions: SessionFactory
    amqp_url: str
    topology: Topology
    make_client: Callable[..., Awaitable[Client]]
    database_url: str
    root_id: str
    box: SecretBox = field(default_factory=lambda: SecretBox(DEVELOPMENT_ENCRYPTION_KEY))

    async def webhook(self, *, owner_id: str | None = None, **fields: Any) -> str:
        hook = Webhook(
            owner_id=owner_id or self.root_id,
            task=fields.pop("task", "hello"),
            secret_encrypted=self.box.encrypt(fields.pop("secret", SECRET)),
            **fields,
        )
        async with self.sessions() as session:
            session.add(hook)
            await session.commit()
        return hook.id

    async def ingress(self, **overrides: Any) -> Client:
        settings = IngressSettings(
            database_url=SecretStr(self.database_url),
            amqp_url=SecretStr(self.amqp_url),
            amqp_prefix=self.topology.prefix,
            **{"config_cache_seconds": 300.0, **overrides},
        )
        return await self.make_client(create_app(settings))

    async def drain(
        self, *, until: Callable[[list[Event]], bool], seconds: float = 5.0
    ) -> list[Event]:
        """Events on the collector's queue until `until` holds (or `seconds` pass)."""
        found: list[Event] = []
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(self.topology.queue("collector.events"))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    if until(found):
                        return found
                    await asyncio.sleep(0.05)
                    continue
                found.extend(decode(message.type or "", message.body))
        return found


def deliveries(events: list[Event]) -> list[WebhookDelivered]:
    return [e for e in events if isinstance(e, WebhookDelivered)]


def requests(events: list[Event]) -> list[JobRequested]:
    return [e for e in events if isinstance(e, JobRequested)]


@pytest.fixture
async def world(
    postgres_url: str,
    amqp_url: str,
    topology: Topology,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> AsyncIterator[World]:
    await upgrade_database(postgres_url)
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    await ensure_builtins(sessions, root_password="root")
    async with sessions() as session:
        root = next(u for u in await _users(session) if u.username == "root")
        session.add(Runner(name="python", git_url="https://example.org/r.git"))
        await session.commit()
        session.add(Task(name="hello", runner="python", command="true"))
        session.add(
            Task(
                name="typed",
                runner="python",
                command="true",
                schema_={"type": "object", "required": ["device"]},
            )
        )
        await session.commit()
    try:
        yield World(sessions, amqp_url, topology, aiohttp_client, postgres_url, root.id)
    finally:
        await engine.dispose()


async def _users(session: Any) -> list[User]:
    from sqlmodel import select

    return list((await session.exec(select(User))).all())


async def test_netbox_47_device_update_is_accepted_and_logged(world: World) -> None:
    hook = await world.webhook(scheme="netbox")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    response = await client.post(RUN + hook, data=raw, headers=headers)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["status"] == "accepted"
    assert answer["msg"] == "job created successfully"
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 1)
    (job,) = requests(events)
    (logged,) = deliveries(events)
    assert job.job_id == answer["id"]
    assert job.input == raw.decode()
    assert job.delivery_id == logged.delivery_id
    assert logged.outcome == "accepted"
    assert logged.scheme == "netbox"
    assert logged.job_id == answer["id"]
    assert logged.body == raw.decode()
    assert logged.secret_matched == "current"
    assert logged.size == len(raw)
    assert logged.source == "127.0.0.1"
    assert logged.idempotency_key is not None
    assert len(logged.idempotency_key) == 64
    # The signature is recognisable in the log, never usable.
    assert logged.headers["x-hook-signature"].endswith("…")
    assert headers["X-Hook-Signature"] not in json.dumps(logged.headers)


async def test_legacy_netbox_and_infrahub_bodies_are_accepted(world: World) -> None:
    netbox = await world.webhook(scheme="netbox")
    infrahub = await world.webhook(scheme="infrahub")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(legacy=True), SECRET)
    assert (await client.post(RUN + netbox, data=raw, headers=headers)).status == 202
    raw, headers = infrahub_wire(infrahub_node_update(), SECRET)
    response = await client.post(RUN + infrahub, data=raw, headers=headers)
    assert response.status == 202, await response.text()
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert sorted(d.scheme or "" for d in deliveries(events)) == ["netbox", "standard"]


async def test_bad_signature_is_401_and_logged_with_its_reason(world: World) -> None:
    hook = await world.webhook()
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), "not-the-secret")
    response = await client.post(RUN + hook, data=raw, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "webhook authentication failed."}
    stale_body, stale = infrahub_wire(infrahub_node_update(), SECRET, at=int(time.time()) - 3600)
    assert (await client.post(RUN + hook, data=stale_body, headers=stale)).status == 401
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert not requests(events)
    reasons = sorted(d.reason or "" for d in deliveries(events))
    assert reasons == ["bad signature", "stale timestamp"]
    assert all(d.outcome == "rejected" and d.body is None for d in deliveries(events))


async def test_unknown_webhook_is_404_and_not_logged(world: World) -> None:
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert (await client.post(RUN + str(uuid.uuid4()), data=raw, headers=headers)).status == 404
    assert await world.drain(until=lambda es: False, seconds=1.0) == []


async def test_retry_is_a_duplicate_with_the_first_job_id(world: World) -> None:
    hook = await world.webhook(scheme="infrahub")
    client = await world.ingress()
    body = infrahub_node_update(event_id="event-1")
    raw, headers = infrahub_wire(body, SECRET)
    first = await client.post(RUN + hook, data=raw, headers=headers)
    raw, headers = infrahub_wire(body, SECRET)  # Infrahub's retry: new id and timestamp
    second = await client.post(RUN + hook, data=raw, headers=headers)
    assert first.status == second.status == 202
    one, two = await first.json(), await second.json()
    assert (one["status"], two["status"]) == ("accepted", "duplicate")
    assert one["id"] == two["id"]
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert len(requests(events)) == 1  # nothing run twice
    outcomes = {d.outcome: d for d in deliveries(events)}
    assert outcomes["duplicate"].job_id == one["id"]
    assert outcomes["duplicate"].idempotency_key == "event-1"
    assert outcomes["duplicate"].body is None


async def test_filter_decides_whether_a_job_runs(world: World) -> None:
    hook = await world.webhook(scheme="netbox", filter="snapshots.postchange.status == 'active'")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(status="offline"), SECRET)
    response = await client.post(RUN + hook, data=raw, headers=headers)
    assert response.status == 202
    assert (await response.json())["status"] == "filtered"
    raw, headers = netbox_wire(netbox_device_update(status="active"), SECRET)
    response = await client.post(RUN + hook, data=raw, headers=headers)
    assert (await response.json())["status"] == "accepted"
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert len(requests(events)) == 1
    filtered = next(d for d in deliveries(events) if d.outcome == "filtered")
    assert filtered.reason == "filter did not match"
    assert filtered.body is None


async def test_owner_permission_and_schema_are_checked(world: World) -> None:
    async with world.sessions() as session:
        nobody = User(username="nobody")
        session.add(nobody)
        await session.commit()
    unprivileged = await world.webhook(owner_id=nobody.id)
    typed = await world.webhook(task="typed")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert (await client.post(RUN + unprivileged, data=raw, headers=headers)).status == 403
    response = await client.post(RUN + typed, data=raw, headers=headers)
    assert response.status == 400
    assert "device" in (await response.json())["error"]
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    reasons = sorted(d.reason or "" for d in deliveries(events))
    assert reasons[0] == "permission: the owner lacks jobs:write on hello"
    assert reasons[1].startswith("schema: input does not match the task schema")


async def test_per_webhook_body_cap(world: World) -> None:
    hook = await world.webhook(max_body_bytes=200)
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert len(raw) > 200
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 413
    small = b'{"event": "created"}'
    response = await client.post(
        RUN + hook, data=small, headers={"X-Hook-Signature": sign_github(SECRET, small)[7:]}
    )
    assert response.status == 401  # under the cap: on to verification
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    assert sorted(d.reason or "" for d in deliveries(events)) == [
        "malformed signature",
        "too large",
    ]


async def test_rate_limit_answers_429_with_retry_after(world: World) -> None:
    hook = await world.webhook(rate_limit_per_second=1.0)
    client = await world.ingress()
    answers = []
    for _ in range(3):
        raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), SECRET)
        response = await client.post(RUN + hook, data=raw, headers=headers)
        answers.append((response.status, response.headers.get("Retry-After")))
    assert answers[0] == (202, None)
    assert answers[1] == (429, "1")
    assert answers[2] == (429, "1")
    await asyncio.sleep(1.1)
    raw, headers = netbox_wire(netbox_device_update(name="later"), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    # Bad signatures do not use up the sender's allowance.
    raw, headers = netbox_wire(netbox_device_update(), "wrong-secret")
    for _ in range(5):
        assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 401
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 9)
    assert [d.reason for d in deliveries(events)].count("rate limited") == 2


async def _burst(client: Client, hook: str, count: int) -> dict[int, int]:
    """Answers to `count` signed deliveries in a row, by status."""
    answers: dict[int, int] = {}
    for _ in range(count):
        raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), SECRET)
        status = (await client.post(RUN + hook, data=raw, headers=headers)).status
        answers[status] = answers.get(status, 0) + 1
    return answers


def _stop_clock(client: Client) -> None:
    """Freezes the replica's rate-limit clock: no refill during the test, so a burst is
    answered by the buckets' size alone, however slow the machine."""
    client.app[INTAKE].clock = lambda: 1000.0


async def _until_peers(clients: list[Client], count: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while any(c.app[PEERS].count() != count for c in clients):
        assert time.monotonic() < deadline, [c.app[PEERS].count() for c in clients]
        await asyncio.sleep(0.02)


async def test_rate_limit_holds_whatever_the_number_of_replicas(world: World) -> None:
    # Heartbeats far apart: the replicas meet (a newcomer is answered at once) and part
    # (a stopping one says goodbye) without waiting for one, let alone three.
    slow = {"ingress_heartbeat_seconds": 30.0}
    first = await world.ingress(**slow)
    _stop_clock(first)
    alone = await world.webhook(rate_limit_per_second=20.0)
    assert await _burst(first, alone, 30) == {202: 20, 429: 10}

    second = await world.ingress(**slow)
    _stop_clock(second)
    await _until_peers([first, second], 2)
    assert await _metric(first, "kriten_ingress_peers") == 2
    shared = await world.webhook(rate_limit_per_second=20.0)
    assert await _burst(first, shared, 30) == {202: 10, 429: 20}
    assert await _burst(second, shared, 30) == {202: 10, 429: 20}

    await second.close()
    await _until_peers([first], 1, seconds=2.0)
    again = await world.webhook(rate_limit_per_second=20.0)
    assert await _burst(first, again, 30) == {202: 20, 429: 10}


async def test_source_allow_list_and_trusted_proxies(world: World) -> None:
    hook = await world.webhook(allowed_sources=["10.0.0.0/8"])
    direct = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    forwarded = {**headers, "X-Forwarded-For": "10.1.2.3"}
    # The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is ignored.
    assert (await direct.post(RUN + hook, data=raw, headers=forwarded)).status == 403
    proxied = await world.ingress(trusted_proxies="127.0.0.0/8")
    assert (await proxied.post(RUN + hook, data=raw, headers=forwarded)).status == 202
    spoofed = {**headers, "X-Forwarded-For": "10.1.2.3, 192.0.2.7"}
    assert (await proxied.post(RUN + hook, data=raw, headers=spoofed)).status == 403
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 3)
    by_outcome = sorted((d.outcome, d.source or "", d.reason) for d in deliveries(events))
    assert by_outcome == [
        ("accepted", "10.1.2.3", None),
        ("rejected", "127.0.0.1", "source not allowed"),
        ("rejected", "192.0.2.7", "source not allowed"),
    ]


async def test_previous_secret_verifies_during_its_grace(world: World) -> None:
    hook = await world.webhook(
        secret="new-secret-value-1",
        previous_secret_encrypted=world.box.encrypt(SECRET),
        previous_secret_expires_at=utcnow() + timedelta(hours=1),
    )
    expired = await world.webhook(
        secret="new-secret-value-2",
        previous_secret_encrypted=world.box.encrypt(SECRET),
        previous_secret_expires_at=utcnow() - timedelta(seconds=1),
    )
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    assert (await client.post(RUN + expired, data=raw, headers=headers)).status == 401
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 2)
    accepted = next(d for d in deliveries(events) if d.outcome == "accepted")
    assert accepted.secret_matched == "previous"


async def test_cached_config_is_dropped_by_config_changed(world: World) -> None:
    hook = await world.webhook()
    client = await world.ingress()  # TTL 300 s: only the event can explain a change
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    before = await _metric(client, 'kriten_ingress_config_cache_total{result="hit"}')
    raw, headers = netbox_wire(netbox_device_update(name="second"), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    assert await _metric(client, 'kriten_ingress_config_cache_total{result="hit"}') == before + 1

    async with world.sessions() as session:
        row = await session.get(Webhook, hook)
        assert row is not None
        row.secret_encrypted = world.box.encrypt("rotated-secret-value")
        session.add(row)
        await session.commit()
    # Without the event the cache still answers with the old secret ...
    raw, headers = netbox_wire(netbox_device_update(name="third"), SECRET)
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202
    connection = await aio_pika.connect_robust(world.amqp_url)
    async with connection:
        await publish_broadcast(
            connection, world.topology, ConfigChanged(kind="webhook", name=hook)
        )
    # ... and within a second of it, no longer.
    deadline = time.monotonic() + 1.0
    status = 202
    while time.monotonic() < deadline and status != 401:
        raw, headers = netbox_wire(netbox_device_update(name=str(uuid.uuid4())), SECRET)
        status = (await client.post(RUN + hook, data=raw, headers=headers)).status
        await asyncio.sleep(0.02)
    assert status == 401
    raw, headers = netbox_wire(netbox_device_update(name="new"), "rotated-secret-value")
    assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 202


async def test_rejected_flood_is_sampled_in_the_log_and_counted_in_metrics(
    world: World,
) -> None:
    hook = await world.webhook()
    client = await world.ingress(rejected_log_burst=5, rejected_log_per_second=0.1)
    raw, headers = netbox_wire(netbox_device_update(), "wrong-secret")
    for _ in range(60):
        assert (await client.post(RUN + hook, data=raw, headers=headers)).status == 401
    events = await world.drain(until=lambda es: False, seconds=1.5)
    assert len(deliveries(events)) <= 6
    assert await _metric(client, 'kriten_ingress_rejections_total{reason="bad signature"}') == 60
    label = webhook_label(hook)
    labelled = (
        f'kriten_ingress_deliveries_total{{outcome="rejected",scheme="auto",webhook="{label}"}}'
    )
    assert await _metric(client, labelled) == 60
    # /metrics answers anyone who reaches it; the id would be half of what a sender needs.
    assert hook not in await (await client.get("/metrics")).text()


async def _metric(client: Client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_accepted_job_and_its_log_record_share_one_confirmed_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What reaches the broker channel: the job request's message and the delivery-log
    message are both on the wire before either is confirmed (one round trip)."""
    wire: list[tuple[str, str]] = []  # (what, routing key) in order
    original = aio_pika.Exchange.publish

    async def spied(self: aio_pika.Exchange, message: Any, routing_key: str, **kw: Any) -> Any:
        wire.append(("sent", routing_key))
        try:
            return await original(self, message, routing_key, **kw)
        finally:
            wire.append(("confirmed", routing_key))

    monkeypatch.setattr(aio_pika.Exchange, "publish", spied)
    hook = await world.webhook(scheme="netbox")
    client = await world.ingress()
    raw, headers = netbox_wire(netbox_device_update(), SECRET)
    response = await client.post(RUN + hook, data=raw, headers=headers)
    assert response.status == 202, await response.text()
    events = await world.drain(until=lambda es: len(deliveries(es)) >= 1)
    (logged,) = deliveries(events)
    assert logged.outcome == "accepted"
    ours = [step for step in wire if step[1] in ("job.requested", "webhook.delivery")]
    sent = [step for step in ours if step[0] == "sent"]
    assert sorted(key for _, key in sent) == ["job.requested", "webhook.delivery"]
    # Both sent before the first confirm came back: one batch, not two in a row.
    assert [what for what, _ in ours[:2]] == ["sent", "sent"]
