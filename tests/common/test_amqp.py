"""The broker layer on a real RabbitMQ: confirms, ack, retry with delay, dead-letter."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from kriten_common import errors
from kriten_common.amqp import BrokerUnreachable, Consumer, Publisher, Topology, connect
from kriten_common.messages import Event, JobDispatched, JobRequested, decode
from kriten_common.outcomes import PermanentError, RetryableError

pytestmark = pytest.mark.integration


def requested(job_id: str) -> JobRequested:
    return JobRequested(
        job_id=job_id, task="t", owner="root", owner_id="u", source="api", input='{"a": 1}'
    )


async def _queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def _get_one(amqp_url: str, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue)
        for _ in range(100):
            message = await declared.get(fail=False, no_ack=True)
            if message is not None:
                return message
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue}")


async def test_published_event_waits_durably_in_every_bound_queue(
    amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(requested("t-1"))
    # No consumer ran: the message sits in both consumers' quorum queues.
    assert await _queue_depth(amqp_url, topology.queue("dispatcher.job-requested")) == 1
    assert await _queue_depth(amqp_url, topology.queue("collector.events")) == 1
    message = await _get_one(amqp_url, topology.queue("dispatcher.job-requested"))
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    (event,) = decode(message.type or "", message.body)
    assert isinstance(event, JobRequested)
    assert (event.job_id, event.input) == ("t-1", '{"a": 1}')


async def test_publish_without_broker_is_unavailable(topology: Topology) -> None:
    connection = await connect("amqp://guest:guest@127.0.0.1:5672/")
    publisher = Publisher(connection, topology)
    await publisher.open()
    await connection.close()
    with pytest.raises(errors.Unavailable):
        await publisher.publish(requested("t-2"))


async def test_connect_failure_is_one_clear_line() -> None:
    with pytest.raises(BrokerUnreachable) as caught:
        await connect("amqp://guest:secretpw@127.0.0.1:1/")
    message = str(caught.value)
    assert message.startswith("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/")
    assert message.endswith("(set KRITEN_AMQP_URL)")
    assert "secretpw" not in message
    assert "\n" not in message


async def _consume(
    amqp_url: str,
    topology: Topology,
    handler: object,
    events: list[Event],
    until: asyncio.Event,
    timeout: float = 15,
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer="dispatcher.job-requested",
            handler=handler,  # type: ignore[arg-type]
        )
        await consumer.start()
        for event in events:
            await publisher.publish(event)
        await asyncio.wait_for(until.wait(), timeout)
        await consumer.stop()


async def test_consumer_handles_then_acks(amqp_url: str, topology: Topology) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        assert isinstance(event, JobRequested)
        seen.append(event.job_id)
        if len(seen) == 3:
            done.set()

    await _consume(amqp_url, topology, handler, [requested(f"j-{i}") for i in range(3)], done)
    assert sorted(seen) == ["j-0", "j-1", "j-2"]
    await asyncio.sleep(0.2)
    assert await _queue_depth(amqp_url, topology.queue("dispatcher.job-requested")) == 0


async def test_retryable_error_comes_back_after_delay(amqp_url: str, topology: Topology) -> None:
    attempts: list[float] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 2:
            raise RetryableError("not yet", delay=1)
        done.set()

    await _consume(amqp_url, topology, handler, [requested("r-1")], done)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.9  # went through the 1 s delay queue


async def test_permanent_error_is_dead_lettered_with_reason(
    amqp_url: str, topology: Topology
) -> None:
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        done.set()
        raise PermanentError("task gone")

    await _consume(amqp_url, topology, handler, [requested("p-1")], done)
    message = await _get_one(amqp_url, topology.dead_letter_queue)
    headers = message.headers or {}
    assert headers["x-kriten-reason"] == "task gone"
    (event,) = decode(message.type or "", message.body)
    assert isinstance(event, JobRequested)
    assert event.job_id == "p-1"


async def test_gives_up_after_max_attempts(amqp_url: str, topology: Topology) -> None:
    calls = 0

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RetryableError("always", delay=0)

    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer="dispatcher.job-requested",
            handler=handler,
            max_attempts=2,
        )
        await consumer.start()
        await publisher.publish(requested("g-1"))
        message = await _get_one(amqp_url, topology.dead_letter_queue)
        await consumer.stop()
    assert calls == 2
    assert "gave up after 2 attempts" in str((message.headers or {})["x-kriten-reason"])


async def test_undecodable_message_is_dead_lettered(amqp_url: str, topology: Topology) -> None:
    handled = asyncio.Event()

    async def handler(event: Event) -> None:
        handled.set()

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
        await consumer.start()
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(body=b"not json", type="job.requested"),
            routing_key=topology.queue("dispatcher.job-requested"),
        )
        message = await _get_one(amqp_url, topology.dead_letter_queue)
        await consumer.stop()
    assert message.body == b"not json"
    assert "undecodable" in str((message.headers or {})["x-kriten-reason"])
    assert not handled.is_set()


async def test_events_other_than_the_failing_one_are_not_retried(
    amqp_url: str, topology: Topology
) -> None:
    calls: dict[str, int] = {}
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        assert isinstance(event, JobRequested)
        calls[event.job_id] = calls.get(event.job_id, 0) + 1
        if event.job_id == "b" and calls["b"] == 1:
            raise RetryableError("once", delay=1)
        if calls.get("b") == 2:
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
        await consumer.start()
        # One message carrying three events (a coalesced publish).
        await publisher.publish(requested("a"), requested("b"), requested("c"))
        await asyncio.wait_for(done.wait(), 15)
        await consumer.stop()
    assert calls == {"a": 1, "b": 2, "c": 1}


async def test_published_dispatched_event_round_trips(amqp_url: str, topology: Topology) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(JobDispatched(job_id="x", executor="local"))
    message = await _get_one(amqp_url, topology.queue("collector.events"))
    (event,) = decode(message.type or "", message.body)
    assert isinstance(event, JobDispatched)
    assert (event.job_id, event.executor) == ("x", "local")


async def test_concurrent_publishes_are_coalesced_and_all_confirmed(
    amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await asyncio.gather(*(publisher.publish(requested(f"c-{i}")) for i in range(200)))
        await publisher.close()
    queue = topology.queue("dispatcher.job-requested")
    messages_in_queue = await _queue_depth(amqp_url, queue)
    # Fewer messages than events (group commit), and every event is there once.
    assert 1 <= messages_in_queue < 200
    seen: list[str] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue)
        while (message := await declared.get(fail=False, no_ack=True)) is not None:
            seen.extend(e.job_id for e in decode(message.type or "", message.body))  # type: ignore[attr-defined]
    assert sorted(seen) == sorted(f"c-{i}" for i in range(200))


async def test_every_waiting_caller_learns_of_a_failed_batch(topology: Topology) -> None:
    connection = await connect("amqp://guest:guest@127.0.0.1:5672/")
    publisher = Publisher(connection, topology)
    await publisher.open()
    await connection.close()
    results = await asyncio.gather(
        *(publisher.publish(requested(f"f-{i}")) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, errors.Unavailable) for r in results)
