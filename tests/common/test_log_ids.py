"""The ids bound at the edges: an HTTP request's correlation id, and a consumed event's
correlation, job and webhook ids, on every line logged while it is handled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from kriten_collector.write_batcher import WriteBatcher
from kriten_common import errors
from kriten_common.amqp import Consumer, Publisher, Topology, connect
from kriten_common.http import create_service_app
from kriten_common.logging import bound_ids, get_logger, merge_ids
from kriten_common.messages import Event, JobRequested

log = get_logger(__name__)
IDS = ("correlation_id", "job_id", "webhook_id")


def _ids(line: dict[str, Any]) -> dict[str, Any]:
    return {name: line[name] for name in IDS if name in line}


def requested(job_id: str, **ids: str) -> JobRequested:
    return JobRequested(
        job_id=job_id, task="t", owner="root", owner_id="u", source="webhook", input="{}", **ids
    )


@pytest.mark.integration
async def test_a_consumed_events_ids_are_on_its_handlers_lines_only(
    amqp_url: str, topology: Topology
) -> None:
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        assert isinstance(event, JobRequested)
        log.info("handling")
        # A task started by the handler inherits them.
        await asyncio.create_task(_log_later("handling_in_task"))
        handled.append(event.job_id)
        if len(handled) == 4:
            done.set()

    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer="dispatcher.job-requested",
            handler=handler,
        )
        with structlog.testing.capture_logs([merge_ids]) as logged:
            await consumer.start()
            await publisher.publish(requested("j-1", correlation_id="c-1", webhook_id="w-1"))
            # Two events in one message: the second must not keep the first one's ids.
            await publisher.publish(
                requested("j-2", correlation_id="c-2"), requested("j-3", webhook_id="w-3")
            )
            await publisher.publish(requested("j-4"))
            await asyncio.wait_for(done.wait(), 15)
            await consumer.stop()
            log.info("after")
    lines = [line for line in logged if line["event"] in ("handling", "handling_in_task")]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_job.setdefault(line["job_id"], []).append(_ids(line))
    assert by_job == {
        "j-1": [{"correlation_id": "c-1", "job_id": "j-1", "webhook_id": "w-1"}] * 2,
        "j-2": [{"correlation_id": "c-2", "job_id": "j-2"}] * 2,
        "j-3": [{"job_id": "j-3", "webhook_id": "w-3"}] * 2,
        "j-4": [{"job_id": "j-4"}] * 2,
    }
    (after,) = [line for line in logged if line["event"] == "after"]
    assert _ids(after) == {}


async def _log_later(event: str) -> None:
    await asyncio.sleep(0)
    log.info(event)


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_request_is_followed_by_its_correlation_id() -> None:
    async def handler(_request: web.Request) -> web.Response:
        log.info("handled")
        raise RuntimeError("boom")

    app = create_service_app(registry=CollectorRegistry())
    app.router.add_get("/work", handler)
    client = await _client(app)
    try:
        with structlog.testing.capture_logs([merge_ids]) as logged:
            given = await client.get("/work", headers={"X-Request-Id": "proxy-id-0001"})
            invented = await client.get("/work")
            refused = await client.get("/work", headers={"X-Request-Id": "bad id\u00e9"})
            log.info("after")
    finally:
        await client.close()
    assert given.status == invented.status == refused.status == 500
    handled = [line for line in logged if line["event"] == "handled"]
    failed = [line for line in logged if line["event"] == "unhandled_error"]
    # The error middleware's line carries it too.
    assert [line["correlation_id"] for line in handled] == [
        line["correlation_id"] for line in failed
    ]
    first, second, third = (line["correlation_id"] for line in handled)
    assert first == "proxy-id-0001"
    assert len(second) == 32
    # A header that is not a plausible id is replaced by one of our own.
    assert second != third
    assert len(third) == 32
    assert int(third, 16) >= 0  # hex, not the header's text
    (after,) = [line for line in logged if line["event"] == "after"]
    assert _ids(after) == {}


async def test_a_write_batch_carries_no_ids_of_its_first_caller() -> None:
    async def commit(items: Any) -> list[None]:
        log.info("batch_committed", size=len(items))
        return [None] * len(items)

    batcher: WriteBatcher[str, None] = WriteBatcher(commit)

    async def write(job_id: str) -> None:
        with bound_ids(correlation_id=f"c-{job_id}", job_id=job_id):
            await batcher.write(job_id)
            log.info("written")

    with structlog.testing.capture_logs([merge_ids]) as logged:
        await asyncio.gather(write("j-1"), write("j-2"))
    batches = [line for line in logged if line["event"] == "batch_committed"]
    assert batches
    assert all(_ids(line) == {} for line in batches)
    written = sorted(line["job_id"] for line in logged if line["event"] == "written")
    assert written == ["j-1", "j-2"]


@pytest.mark.integration
async def test_a_publish_batch_carries_no_ids_of_its_first_caller(
    amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    publisher = Publisher(connection, topology)
    await publisher.open()
    await connection.close()
    capture = structlog.testing.capture_logs([merge_ids])
    with (
        capture as logged,
        bound_ids(correlation_id="c-1", job_id="j-1"),
        pytest.raises(errors.Unavailable),
    ):
        await publisher.publish(requested("j-1", correlation_id="c-1"))
    failed = [line for line in logged if line["event"] == "publish_failed"]
    assert failed
    assert all(_ids(line) == {} for line in failed)
