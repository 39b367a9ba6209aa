"""The consumer and publisher metrics on a real RabbitMQ: what each message became, how
long its handling took, what was redelivered, what was published, and the queue's depth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from kriten_common.amqp import (
    BroadcastSubscription,
    Consumer,
    Publisher,
    Topology,
    connect,
    publish_broadcast,
)
from kriten_common.consumer_metrics import ConsumerMetrics, PublisherMetrics
from kriten_common.messages import ConfigChanged, Event, JobRequested
from kriten_common.outcomes import PermanentError, RetryableError

pytestmark = pytest.mark.integration

QUEUE = "dispatcher.job-requested"


def requested(job_id: str) -> JobRequested:
    return JobRequested(job_id=job_id, task="t", owner="root", owner_id="u", source="api", input="")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("not reached in time")
        await asyncio.sleep(0.02)


def test_one_set_per_registry() -> None:
    registry = CollectorRegistry()
    assert ConsumerMetrics.of(registry) is ConsumerMetrics.of(registry)
    assert PublisherMetrics.of(registry) is PublisherMetrics.of(registry)
    assert ConsumerMetrics.of(CollectorRegistry()) is not ConsumerMetrics.of(registry)


async def test_consumed_and_published_messages_are_counted_by_outcome(
    amqp_url: str, topology: Topology
) -> None:
    registry = CollectorRegistry()
    tries: dict[str, int] = {}

    async def handler(event: Event) -> None:
        assert isinstance(event, JobRequested)
        tries[event.job_id] = tries.get(event.job_id, 0) + 1
        if event.job_id == "bad":
            raise PermanentError("never")
        if event.job_id == "flaky" and tries["flaky"] == 1:
            raise RetryableError("not yet", delay=1)

    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology, metrics=PublisherMetrics.of(registry))
        await publisher.open()
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer=QUEUE,
            handler=handler,
            metrics=ConsumerMetrics.of(registry),
        )
        await consumer.start()
        for job_id in ("ok", "bad", "flaky"):
            await publisher.publish(requested(job_id))

        def outcome(name: str) -> float:
            return sample(registry, "kriten_consumer_messages_total", queue=QUEUE, outcome=name)

        # ok, and flaky's second delivery (from the 1 s delay queue).
        await eventually(lambda: outcome("ack") == 2)
        await consumer.stop()
        await publisher.close()
    assert outcome("retry") == 1
    assert outcome("dead_letter") == 1
    assert outcome("requeue") == 0
    assert sample(registry, "kriten_consumer_handler_seconds_count", queue=QUEUE) == 4
    assert sample(registry, "kriten_consumer_retries_total", queue=QUEUE, kind="attempt") == 1
    assert sample(registry, "kriten_consumer_dead_letters_total", queue=QUEUE) == 1
    for name in ("kriten_publisher_messages_total", "kriten_publisher_events_total"):
        confirmed = sample(registry, name, routing_key="job.requested", outcome="confirmed")
        assert confirmed == 3


async def test_a_failed_publish_is_counted(topology: Topology) -> None:
    registry = CollectorRegistry()
    connection = await connect("amqp://guest:guest@127.0.0.1:5672/")
    publisher = Publisher(connection, topology, metrics=PublisherMetrics.of(registry))
    await publisher.open()
    await connection.close()
    with pytest.raises(Exception, match="unavailable"):
        await publisher.publish(requested("lost"))
    labels = {"routing_key": "job.requested", "outcome": "failed"}
    assert sample(registry, "kriten_publisher_events_total", **labels) == 1


async def test_queue_depth_and_consumers_are_read_while_consuming(
    amqp_url: str, topology: Topology
) -> None:
    registry = CollectorRegistry()
    release = asyncio.Event()

    async def handler(_event: Event) -> None:
        await release.wait()

    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        for number in range(3):
            await publisher.publish(requested(f"held-{number}"))
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer=QUEUE,
            handler=handler,
            prefetch=1,
            metrics=ConsumerMetrics.of(registry),
            depth_interval=0.05,
        )
        await consumer.start()
        # One message is with the handler; the other two wait, ready, in the queue.
        await eventually(
            lambda: sample(registry, "kriten_consumer_queue_messages", queue=QUEUE) == 2
        )
        assert sample(registry, "kriten_consumer_queue_consumers", queue=QUEUE) == 1
        release.set()
        await eventually(
            lambda: sample(registry, "kriten_consumer_queue_messages", queue=QUEUE) == 0
        )
        await consumer.stop()
        await publisher.close()


async def test_a_message_another_consumer_left_unacked_counts_as_redelivered(
    amqp_url: str, topology: Topology
) -> None:
    registry = CollectorRegistry()
    taken = asyncio.Event()

    async def stuck(_event: Event) -> None:
        taken.set()
        await asyncio.Event().wait()

    first = await connect(amqp_url)
    publisher = Publisher(first, topology)
    await publisher.open()
    await publisher.publish(requested("again"))
    await publisher.close()
    await Consumer(connection=first, topology=topology, consumer=QUEUE, handler=stuck).start()
    await asyncio.wait_for(taken.wait(), 15)
    # The replica dies mid-message: the broker delivers it again, flagged.
    await first.close()

    handled = asyncio.Event()

    async def handler(_event: Event) -> None:
        handled.set()

    second = await connect(amqp_url)
    async with second:
        consumer = Consumer(
            connection=second,
            topology=topology,
            consumer=QUEUE,
            handler=handler,
            metrics=ConsumerMetrics.of(registry),
        )
        await consumer.start()
        await asyncio.wait_for(handled.wait(), 15)
        await eventually(
            lambda: (
                sample(registry, "kriten_consumer_messages_total", queue=QUEUE, outcome="ack") == 1
            )
        )
        await consumer.stop()
    assert sample(registry, "kriten_consumer_redelivered_total", queue=QUEUE) == 1


async def test_broadcast_messages_are_counted_under_the_subscription_name(
    amqp_url: str, topology: Topology
) -> None:
    registry = CollectorRegistry()
    seen = asyncio.Event()

    async def handler(_event: Event) -> None:
        seen.set()

    connection = await connect(amqp_url)
    async with connection:
        subscription = BroadcastSubscription(
            connection=connection,
            topology=topology,
            name="test",
            routing_keys=(ConfigChanged.routing_key,),
            handler=handler,
            metrics=ConsumerMetrics.of(registry),
        )
        await subscription.start()
        await publish_broadcast(
            connection,
            topology,
            ConfigChanged(kind="task", name="t"),
            metrics=PublisherMetrics.of(registry),
        )
        await asyncio.wait_for(seen.wait(), 15)
        await eventually(
            lambda: (
                sample(
                    registry,
                    "kriten_consumer_messages_total",
                    queue="broadcast.test",
                    outcome="ack",
                )
                == 1
            )
        )
        await subscription.stop()
    labels = {"routing_key": "config.changed", "outcome": "confirmed"}
    assert sample(registry, "kriten_publisher_messages_total", **labels) == 1
