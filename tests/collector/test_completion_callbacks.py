"""Completion callbacks through the collector's app on real RabbitMQ, on SQLite and
PostgreSQL: a receiver started here verifies each call's Standard Webhooks signature
with the task's secret the way any receiver would (not with Kriten's code), and gets
exactly one delivery per finished job, also when it answered 500 to the first attempt.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlmodel import col, select

from kriten_collector import completion_callbacks
from kriten_collector.app import create_app
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import (
    COLLECTOR_CALLBACKS,
    Publisher,
    Topology,
    connect,
    publish_broadcast,
)
from kriten_common.callbacks import new_secret
from kriten_common.client_address import parse_networks
from kriten_common.clock import utcnow
from kriten_common.crypto import SecretBox
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import CallbackDelivery, Job, Runner, Task
from kriten_common.messages import ConfigChanged, JobFinished
from kriten_common.settings import DEVELOPMENT_ENCRYPTION_KEY
from tests.callback_receiver import Receiver, ServeReceiver

pytestmark = pytest.mark.integration

LOCAL = parse_networks(["127.0.0.0/8", "::1/128"])


async def _world(url: str, callbacks: list[dict[str, Any]], secret: str) -> None:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        session.add(Runner(name="python", git_url="https://example.org/r.git"))
        await session.commit()
        box = SecretBox(DEVELOPMENT_ENCRYPTION_KEY)
        session.add(
            Task(
                name="hello",
                runner="python",
                command="true",
                callbacks=callbacks,
                callback_secret_encrypted=box.encrypt(secret),
            )
        )
        session.add(
            Job(
                id="hello-1",
                task="hello",
                owner="root",
                owner_id="u",
                status="succeeded",
                input='{"a": 1}',
                start_time=utcnow(),
                completion_time=utcnow(),
                exit_code=0,
                stdout="secret output",
                json_data={"b": 2},
            )
        )
        await session.commit()
    await engine.dispose()


async def _collector(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    *,
    url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    allowed: Any,
) -> TestClient[Any, Any]:
    settings = CollectorSettings(
        database_url=SecretStr(url),
        amqp_url=SecretStr(amqp_url),
        amqp_prefix=topology.prefix,
        jobs_dir=tmp_path / "jobs",
        callback_allowed_networks=allowed,
        callback_first_retry_seconds=1,
        public_url="https://kriten.example",
    )
    return await aiohttp_client(create_app(settings))


async def _finish(amqp_url: str, topology: Topology, job_id: str = "hello-1") -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(
            JobFinished(job_id=job_id, task="hello", status="succeeded", exit_code=0)
        )
        await publisher.close()


async def _log(url: str, count: int, timeout: float = 20.0) -> list[CallbackDelivery]:
    """The delivery log once it has `count` rows (oldest attempt first)."""
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            async with session_factory(engine)() as session:
                query = select(CallbackDelivery).order_by(col(CallbackDelivery.attempt))
                rows = list((await session.exec(query)).all())
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def test_one_delivery_per_finished_job_after_a_500(
    migrated_database_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    serve_receiver: ServeReceiver,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    secret = new_secret()
    receiver, failures_only = Receiver(secret, statuses=(500,)), Receiver(secret)
    hook, failures_hook = await serve_receiver(receiver), await serve_receiver(failures_only)
    callbacks = [
        {"url": hook, "events": ["succeeded", "failed"]},
        {"url": failures_hook, "events": ["failed"]},
    ]
    await _world(migrated_database_url, callbacks, secret)
    client = await _collector(
        aiohttp_client,
        url=migrated_database_url,
        amqp_url=amqp_url,
        topology=topology,
        tmp_path=tmp_path,
        allowed=LOCAL,
    )
    await _finish(amqp_url, topology)

    rows = await _log(migrated_database_url, 2)
    assert [(r.attempt, r.status_code, r.delivered) for r in rows] == [
        (1, 500, False),
        (2, 200, True),
    ]
    assert all(r.url == hook and r.event == "succeeded" for r in rows)
    # The retry carried the same webhook-id: a receiver can tell it is the same event.
    assert [call[2] for call in receiver.calls] == [500, 200]
    assert len({call[0] for call in receiver.calls}) == 1 == len({r.webhook_id for r in rows})
    assert rows[0].webhook_id == receiver.calls[0][0]
    # The body: the job as the api answers it, without its output (a link instead).
    body = receiver.delivered[0][1]
    assert body["type"] == "job.succeeded"
    assert body["id"] == "hello-1"
    assert body["status"] == "succeeded"
    assert body["json_data"] == {"b": 2}
    assert body["input"] == '{"a": 1}'
    assert "stdout" not in body
    assert body["log_url"] == "https://kriten.example/api/v1/jobs/hello-1/log"
    # The callback for failures only was not called for a success.
    assert failures_only.calls == []

    # The same `job.finished` again (a redelivery, a second announcement): nothing is
    # sent twice.
    # Handled once the callbacks' queue has acked two messages: the retry's (the first
    # attempt's message counts as a retry) and this one.
    await _finish(amqp_url, topology)
    await _until_consumed(client, COLLECTOR_CALLBACKS, 2)
    assert len(receiver.delivered) == 1
    assert len(await _log(migrated_database_url, 3, timeout=0)) == 2


async def test_a_host_resolving_to_a_private_address_is_refused_when_called(
    migrated_sqlite_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    serve_receiver: ServeReceiver,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    secret = new_secret()
    receiver = Receiver(secret)
    # `localhost` passed the save-time check (a name); it resolves to loopback, and no
    # network is allowed here.
    await _world(
        migrated_sqlite_url,
        [{"url": await serve_receiver(receiver), "events": ["succeeded"]}],
        secret,
    )
    client = await _collector(
        aiohttp_client,
        url=migrated_sqlite_url,
        amqp_url=amqp_url,
        topology=topology,
        tmp_path=tmp_path,
        allowed=(),
    )
    await _finish(amqp_url, topology)

    rows = await _log(migrated_sqlite_url, 1)
    assert [(r.attempt, r.status_code, r.delivered, r.gave_up) for r in rows] == [
        (1, None, False, True)
    ]
    assert rows[0].error == "address not allowed (non-public)"
    # Refused for good: its one message acked, none sent to a delay queue.
    await _until_consumed(client, COLLECTOR_CALLBACKS, 1)
    assert await _consumed(client, COLLECTOR_CALLBACKS, "retry") == 0
    assert len(await _log(migrated_sqlite_url, 2, timeout=0)) == 1
    assert receiver.calls == []


async def _consumed(client: TestClient[Any, Any], queue: str, outcome: str = "ack") -> float:
    """Messages the collector took from `queue` with that outcome (its own metric)."""
    text = await (await client.get("/metrics")).text()
    wanted = f'kriten_consumer_messages_total{{outcome="{outcome}",queue="{queue}"}} '
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def _until_consumed(client: TestClient[Any, Any], queue: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while await _consumed(client, queue) < count:
        assert time.monotonic() < deadline, f"{queue} did not take {count} message(s)"
        await asyncio.sleep(0.05)


async def test_callbacks_added_to_a_task_apply_to_its_next_job_once_announced(
    migrated_database_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    serve_receiver: ServeReceiver,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Which tasks have callbacks is cached for long here: only the api's announcement
    # (`config.changed`, heard by the collector's subscription) can make it read again.
    monkeypatch.setattr(
        completion_callbacks,
        "CallbackTasks",
        functools.partial(completion_callbacks.CallbackTasks, ttl_seconds=3600),
    )
    secret = new_secret()
    receiver = Receiver(secret)
    await _world(migrated_database_url, [], secret)
    client = await _collector(
        aiohttp_client,
        url=migrated_database_url,
        amqp_url=amqp_url,
        topology=topology,
        tmp_path=tmp_path,
        allowed=LOCAL,
    )
    # A job of the task while it has no callbacks: handled, nothing called.
    await _finish(amqp_url, topology)
    await _until_consumed(client, COLLECTOR_CALLBACKS, 1)

    engine = create_engine(migrated_database_url)
    async with session_factory(engine)() as session:
        task = await session.get(Task, "hello")
        assert task is not None
        task.callbacks = [{"url": await serve_receiver(receiver), "events": ["succeeded"]}]
        session.add(task)
        await session.commit()
    await engine.dispose()
    connection = await connect(amqp_url)
    async with connection:
        await publish_broadcast(connection, topology, ConfigChanged(kind="task", name="hello"))
    await _until_consumed(client, "broadcast.collector-tasks", 1)

    await _finish(amqp_url, topology)
    rows = await _log(migrated_database_url, 1)
    assert [(r.job_id, r.delivered) for r in rows] == [("hello-1", True)]
    assert len(receiver.delivered) == 1
