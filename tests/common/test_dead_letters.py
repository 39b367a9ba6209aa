"""The dead-letter queue read and replayed in place, on a real RabbitMQ: browsing removes
nothing, ids are stable, a replay reaches its work queue once with fresh attempts."""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, HeadersType

from kriten_common import dead_letters, errors
from kriten_common.amqp import Publisher, Topology, connect, declare_topology
from kriten_common.messages import Event, JobDispatched, JobRequested, encode

pytestmark = pytest.mark.integration

RAW_BODY = b'{"not": "a list of events"'


@dataclass(frozen=True)
class Put:
    """What `put_dead_letters` put in the queue, oldest first."""

    event: JobRequested  # a consumer's dead letter, its job id only in the body
    dispatched: JobDispatched  # a consumer's dead letter with `x-kriten-job-id`
    raw_queue: str  # the queue named by the undecodable one


def requested(job_id: str) -> JobRequested:
    return JobRequested(
        job_id=job_id,
        task="t",
        owner="root",
        owner_id="u",
        source="api",
        input='{"a": 1}',
        correlation_id=f"corr-{job_id}",
    )


async def put_dead_letters(amqp_url: str, topology: Topology) -> Put:
    """Four dead letters, as the consumer makes them (see `Consumer`): an event given up
    on, another with its job id in a header, an undecodable message (no message_id), and
    one that names no queue it came from."""
    event = requested("t-dead")
    dispatched = JobDispatched(job_id="t-other", executor="local")
    work = topology.queue("dispatcher.job-requested")
    collector = topology.queue("collector.events")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)
        letters: list[tuple[Event, HeadersType]] = [
            (event, {"x-kriten-queue": work, "x-kriten-reason": "runner not found"}),
            (
                dispatched,
                {
                    "x-kriten-queue": collector,
                    "x-kriten-reason": "gave up after 10 attempts: db down",
                    "x-kriten-job-id": "t-other",
                },
            ),
        ]
        for one, headers in letters:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=encode([one]),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=one.routing_key,
                    message_id=one.message_id,
                    correlation_id=one.correlation_id,
                    headers=headers,
                ),
                routing_key=topology.dead_letter_queue,
            )
        raw: list[HeadersType] = [
            {"x-kriten-reason": "undecodable message: bad json", "x-kriten-queue": work},
            {"x-kriten-reason": "came from nowhere"},
        ]
        for headers in raw:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=RAW_BODY,
                    type="job.requested",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=headers,
                ),
                routing_key=topology.dead_letter_queue,
            )
    return Put(event=event, dispatched=dispatched, raw_queue=work)


async def depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def drain(amqp_url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Every message in `queue`, taken for good."""
    connection = await aio_pika.connect(amqp_url)
    taken = []
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    return taken


async def test_browsing_reads_every_kind_and_removes_nothing(
    amqp_url: str, topology: Topology
) -> None:
    put = await put_dead_letters(amqp_url, topology)
    connection = await connect(amqp_url)
    async with connection:
        first = await dead_letters.browse(connection, topology, limit=100)
        # Returned once, each now carries x-delivery-count: the ids must not change.
        second = await dead_letters.browse(connection, topology, limit=100)
        assert await dead_letters.count(connection, topology) == 4
        assert len(await dead_letters.browse(connection, topology, limit=2)) == 2
    assert [d.id for d in first] == [d.id for d in second]
    given_up, with_header, raw, orphan = first
    assert given_up.id == put.event.message_id == given_up.message_id
    assert (given_up.queue, given_up.reason) == (put.raw_queue, "runner not found")
    assert (given_up.job_id, given_up.correlation_id) == ("t-dead", "corr-t-dead")
    assert given_up.routing_key == "job.requested"
    assert given_up.replayable
    assert given_up.events is not None
    assert given_up.events[0]["input"] == '{"a": 1}'
    assert given_up.body is None
    assert given_up.dead_lettered_at is None
    assert with_header.job_id == "t-other"
    assert with_header.queue == topology.queue("collector.events")
    # aiormq gives every message it publishes a message_id, the consumer's raw ones too.
    assert raw.message_id is not None
    assert raw.id == raw.message_id
    assert raw.events is None
    assert raw.body == RAW_BODY.decode()
    assert raw.decode_error
    assert raw.replayable
    assert raw.job_id is None
    assert orphan.queue is None
    assert not orphan.replayable
    assert await depth(amqp_url, topology.dead_letter_queue) == 4


def test_a_message_without_message_id_gets_a_stable_id_from_body_and_headers() -> None:
    headers = {"x-kriten-queue": "q", "x-kriten-reason": "bad"}
    first = dead_letters.stable_id(RAW_BODY, headers)
    assert first.startswith("sha256-")
    # The broker counts deliveries in a header: that must not change the id.
    assert dead_letters.stable_id(RAW_BODY, {**headers, "x-delivery-count": 3}) == first
    assert dead_letters.stable_id(RAW_BODY, {"x-kriten-reason": "bad"}) != first
    assert dead_letters.stable_id(RAW_BODY + b" ", headers) != first


async def test_replay_sends_it_back_once_with_fresh_attempts(
    amqp_url: str, topology: Topology
) -> None:
    put = await put_dead_letters(amqp_url, topology)
    work = topology.queue("dispatcher.job-requested")
    connection = await connect(amqp_url)
    async with connection:
        replayed = await dead_letters.replay(connection, topology, put.event.message_id)
        assert replayed is not None
        assert replayed.queue == work
        assert await dead_letters.replay(connection, topology, put.event.message_id) is None
        left = [d.id for d in await dead_letters.browse(connection, topology, limit=100)]
    assert put.event.message_id not in left
    assert len(left) == 3
    (message,) = await drain(amqp_url, work)
    assert message.body == encode([put.event])
    assert (message.type, message.message_id) == ("job.requested", put.event.message_id)
    assert message.correlation_id == "corr-t-dead"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert not any(k.startswith("x-kriten") for k in message.headers)


async def test_unknown_is_none_and_one_without_a_queue_cannot_go_back(
    amqp_url: str, topology: Topology
) -> None:
    await put_dead_letters(amqp_url, topology)
    connection = await connect(amqp_url)
    async with connection:
        assert await dead_letters.replay(connection, topology, "no-such-id") is None
        assert await dead_letters.find(connection, topology, "no-such-id") is None
        orphan = (await dead_letters.browse(connection, topology, limit=100))[-1]
        with pytest.raises(errors.Conflict):
            await dead_letters.replay(connection, topology, orphan.id)
        found = await dead_letters.find(connection, topology, orphan.id)
        assert found is not None
        assert found.reason == "came from nowhere"
        assert await dead_letters.count(connection, topology) == 4


async def test_rabbitmq_own_dead_letter_names_its_queue_from_x_death(
    amqp_url: str, topology: Topology
) -> None:
    work = topology.queue("dispatcher.job-requested")
    event = requested("t-crashing")
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(event)
        # A consumer that keeps crashing: returned until the delivery limit drops it.
        channel = await connection.channel()
        queue = await channel.get_queue(work)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            await message.nack(requeue=True)
        await channel.close()
        (letter,) = await dead_letters.browse(connection, topology, limit=10)
        assert (letter.id, letter.queue, letter.job_id) == (event.message_id, work, "t-crashing")
        assert letter.reason == "dead-lettered by RabbitMQ: delivery_limit"
        assert letter.dead_lettered_at is not None
        assert letter.replayable
        assert await dead_letters.replay(connection, topology, letter.id) is not None
        await publisher.close()
    (back,) = await drain(amqp_url, work)
    assert back.message_id == event.message_id
    assert "x-death" not in back.headers
