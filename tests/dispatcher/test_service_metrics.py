"""The dispatcher's and the collector's `/metrics`, as their apps run on real RabbitMQ and
a real database: after one job request, each shows the series docs/metrics.md promises
(consumed messages, published events, queue depth, launches, job transitions, batch
sizes), and names every documented metric of its service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from kriten_collector.app import create_app as create_collector_app
from kriten_collector.settings import CollectorSettings
from kriten_common.amqp import Publisher, Topology, connect
from kriten_common.db.engine import create_engine, session_factory
from kriten_common.db.models import Runner, Task
from kriten_common.messages import JobRequested
from kriten_dispatcher import app as dispatcher_app
from kriten_dispatcher.settings import DispatcherSettings
from tests.dispatcher.test_dispatching import CountingLauncher
from tests.test_metrics import documented

pytestmark = pytest.mark.integration
Client = TestClient[Any, Any]


async def _metrics(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def _until(client: Client, line: str, timeout: float = 15) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        text = await _metrics(client)
        if line in text.splitlines():
            return text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{line!r} not on /metrics:\n{text}")
        await asyncio.sleep(0.05)


def _names_every_documented_metric(text: str, service: str) -> None:
    for name, (metric, services) in documented().items():
        if services == "all" or service in services:
            assert f"# TYPE {name} {metric.type}" in text, f"{service} /metrics lacks {name}"


async def test_one_job_request_moves_the_dispatcher_and_collector_metrics(
    migrated_sqlite_url: str,
    amqp_url: str,
    topology: Topology,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = create_engine(migrated_sqlite_url)
    async with session_factory(engine)() as session:
        session.add(Runner(name="python", git_url="https://example.org/r.git"))
        await session.commit()
        session.add(Task(name="hello", runner="python", command="true"))
        await session.commit()
    await engine.dispose()
    launcher = CountingLauncher()
    monkeypatch.setattr(dispatcher_app, "make_launcher", lambda _settings: launcher)
    common: dict[str, Any] = {
        "database_url": SecretStr(migrated_sqlite_url),
        "amqp_url": SecretStr(amqp_url),
        "amqp_prefix": topology.prefix,
        "jobs_dir": tmp_path / "jobs",
    }
    dispatcher = await aiohttp_client(dispatcher_app.create_app(DispatcherSettings(**common)))
    collector = await aiohttp_client(create_collector_app(CollectorSettings(**common)))

    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(
            JobRequested(
                job_id="hello-1", task="hello", owner="root", owner_id="u", source="api", input=""
            )
        )
        await publisher.close()

    # Counted once the message is acked, after the launch and its `job.dispatched`.
    text = await _until(
        dispatcher,
        'kriten_consumer_messages_total{outcome="ack",queue="dispatcher.job-requested"} 1.0',
    )
    assert [spec.job_id for spec in launcher.launched] == ["hello-1"]
    lines = text.splitlines()
    assert 'kriten_dispatcher_launches_total{executor="local",outcome="launched"} 1.0' in lines
    assert 'kriten_dispatcher_launch_seconds_count{executor="local"} 1.0' in lines
    assert 'kriten_consumer_handler_seconds_count{queue="dispatcher.job-requested"} 1.0' in lines
    assert (
        'kriten_publisher_events_total{outcome="confirmed",routing_key="job.dispatched"} 1.0'
        in lines
    )
    # The depth is read as the consumer starts (then every 15 s).
    depth = 'kriten_consumer_queue_messages{queue="dispatcher.job-requested"} '
    assert any(line.startswith(depth) for line in lines)
    assert 'kriten_consumer_queue_consumers{queue="dispatcher.job-requested"} 1.0' in lines
    _names_every_documented_metric(text, "dispatcher")

    # The collector takes both the request and the dispatcher's `job.dispatched`.
    text = await _until(
        collector, 'kriten_consumer_messages_total{outcome="ack",queue="collector.events"} 2.0'
    )
    lines = text.splitlines()
    assert 'kriten_collector_job_transitions_total{from="new",to="queued"} 1.0' in lines
    assert 'kriten_collector_store_batch_writes_count{store="jobs"} 1.0' in lines
    assert 'kriten_consumer_handler_seconds_count{queue="collector.events"} 2.0' in lines
    _names_every_documented_metric(text, "collector")
