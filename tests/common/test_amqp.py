"""The broker layer on a real RabbitMQ: confirms, ack, retry with delay, backoff while a
dependency is down, dead-letter with the hook."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
import structlog
from sqlalchemy.exc import OperationalError

from kriten_common import errors
from kriten_common.amqp import (
    BroadcastSubscription,
    BrokerUnreachable,
    Consumer,
    Publisher,
    Rider,
    Topology,
    connect,
    declare_topology,
)
from kriten_common.backoff import RETRY_DELAYS_SECONDS
from kriten_common.clock import utcnow
from kriten_common.messages import (
    ConfigChanged,
    Event,
    JobDispatched,
    JobFinished,
    JobRequested,
    WebhookDelivered,
    decode,
)
from kriten_common.outcomes import PermanentError, RetryableError, TransientError, Waiting

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


async def test_waiting_uses_no_attempt(amqp_url: str, topology: Topology) -> None:
    """A job waiting its turn for a busy concurrency key comes back as often as it must."""
    calls = 0
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise Waiting("key busy", delay=0)
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
            max_attempts=2,
        )
        await consumer.start()
        await publisher.publish(requested("w-1"))
        await asyncio.wait_for(done.wait(), timeout=30)
        await consumer.stop()
    assert calls == 4


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


async def test_the_events_of_a_message_can_be_handled_at_once(
    amqp_url: str, topology: Topology
) -> None:
    """With `event_concurrency`, one slow event does not hold back the rest of its
    message: four events that each wait for all four to be under way pass together (in
    order, the first would wait for ever); a failing one is still retried alone."""
    under_way = asyncio.Barrier(4)
    calls: dict[str, int] = {}
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        assert isinstance(event, JobRequested)
        calls[event.job_id] = calls.get(event.job_id, 0) + 1
        if calls[event.job_id] == 1:
            await asyncio.wait_for(under_way.wait(), 5)
            if event.job_id == "b":
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
            event_concurrency=4,
        )
        await consumer.start()
        await publisher.publish(*(requested(name) for name in "abcd"))
        await asyncio.wait_for(done.wait(), 15)
        await consumer.stop()
    assert calls == {"a": 1, "b": 2, "c": 1, "d": 1}


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


def finished(job_id: str) -> JobFinished:
    return JobFinished(job_id=job_id, task="t", status="succeeded", exit_code=0)


async def test_a_notification_without_listener_is_dropped_quietly(
    amqp_url: str, topology: Topology
) -> None:
    """`job.finished` with no api running (only the callbacks' queue takes it): no
    error, no warning, alone or batched."""
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        with structlog.testing.capture_logs() as logged:
            await publisher.publish(finished("alone"), mandatory=False)
            await asyncio.gather(
                *(publisher.publish(finished(f"n-{i}"), mandatory=False) for i in range(50))
            )
            await publisher.close()
    assert [e for e in logged if e["log_level"] in ("warning", "error", "critical")] == []


def unrouted(name: str) -> ConfigChanged:
    # `config.changed` has no work queue: only per-instance broadcast queues listen.
    return ConfigChanged(kind="task", name=name)


async def test_a_mandatory_publish_without_queue_still_raises(
    amqp_url: str, topology: Topology
) -> None:
    """No queue for `config.changed` in the topology: mandatory, it is a bug, and says so."""
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        with pytest.raises(errors.Unavailable):
            await publisher.publish(unrouted("lost"))
        # A mandatory batch does not carry the flag over to the non-mandatory key's batch.
        await publisher.publish(unrouted("quiet"), mandatory=False)
        await publisher.close()


async def test_job_finished_reaches_every_subscribed_instance(
    amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        seen: dict[str, list[str]] = {"a": [], "b": []}

        def handler(name: str) -> Callable[[Event], Awaitable[None]]:
            async def handle(event: Event) -> None:
                assert isinstance(event, JobFinished)
                seen[name].append(event.job_id)

            return handle

        subscriptions = [
            BroadcastSubscription(
                connection=connection,
                topology=topology,
                name=f"api-{name}",
                routing_keys=(JobFinished.routing_key,),
                handler=handler(name),
            )
            for name in seen
        ]
        for subscription in subscriptions:
            await subscription.start()
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(finished("j-1"), mandatory=False)
        for _ in range(200):
            if all(seen.values()):
                break
            await asyncio.sleep(0.02)
        await publisher.close()
        for subscription in subscriptions:
            await subscription.stop()
    assert seen == {"a": ["j-1"], "b": ["j-1"]}


class DelayShuttle:
    """Moves every message out of the test topology's delay queues back to the work queue
    at once, noting which delay queue it was in and its headers: the retry path is
    asserted on the queues and headers, without waiting for the TTLs."""

    def __init__(self, amqp_url: str, topology: Topology, consumer: str) -> None:
        self._amqp_url = amqp_url
        self._topology = topology
        self._consumer = consumer
        self.passed: list[tuple[int, dict[str, object]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def __aenter__(self) -> DelayShuttle:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        # A flag, not cancel(): aiormq can swallow a cancellation inside basic_get.
        self._stopping = True
        await self._task

    async def _run(self) -> None:
        connection = await aio_pika.connect(self._amqp_url)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, self._topology)
            queues = {
                delay: await channel.get_queue(self._topology.retry_queue(self._consumer, delay))
                for delay in RETRY_DELAYS_SECONDS
            }
            while not self._stopping:
                moved = False
                for delay, queue in queues.items():
                    message = await queue.get(fail=False)
                    if message is None:
                        continue
                    self.passed.append((delay, dict(message.headers or {})))
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            body=message.body,
                            type=message.type,
                            headers=dict(message.headers or {}),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=self._topology.queue(self._consumer),
                    )
                    await message.ack()
                    moved = True
                if not moved:
                    await asyncio.sleep(0.02)


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kriten_common.amqp.jitter_seconds", lambda level: 0.0)


def _database_down() -> OperationalError:
    return OperationalError(
        "SELECT 1", {}, ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    )


async def _run_consumer(
    amqp_url: str,
    topology: Topology,
    handler: object,
    event: Event,
    until: Callable[[], Awaitable[object]],
    *,
    on_dead_letter: object = None,
    max_attempts: int = 10,
) -> object:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        consumer = Consumer(
            connection=connection,
            topology=topology,
            consumer="dispatcher.job-requested",
            handler=handler,  # type: ignore[arg-type]
            on_dead_letter=on_dead_letter,  # type: ignore[arg-type]
            max_attempts=max_attempts,
        )
        await consumer.start()
        await publisher.publish(event)
        try:
            return await asyncio.wait_for(until(), 30)
        finally:
            await consumer.stop()


@pytest.mark.usefixtures("no_jitter")
async def test_a_database_outage_backs_off_without_using_attempts(
    amqp_url: str, topology: Topology
) -> None:
    calls = 0
    handled = asyncio.Event()
    dead: list[str] = []

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls <= 15:
            raise _database_down()
        handled.set()

    async def on_dead_letter(event: Event, reason: str) -> None:
        dead.append(reason)

    async with DelayShuttle(amqp_url, topology, "dispatcher.job-requested") as shuttle:
        await _run_consumer(
            amqp_url,
            topology,
            handler,
            requested("o-1"),
            handled.wait,
            on_dead_letter=on_dead_letter,
            max_attempts=3,  # far fewer than the 15 failures: none of them used one
        )
    assert calls == 16
    assert dead == []
    assert await _queue_depth(amqp_url, topology.dead_letter_queue) == 0
    delays = [delay for delay, _ in shuttle.passed]
    assert delays == [1, 5, 30] + [120] * 12
    assert [h["x-kriten-backoff"] for _, h in shuttle.passed] == list(range(1, 16))
    assert {h["x-kriten-attempt"] for _, h in shuttle.passed} == {1}


@pytest.mark.usefixtures("no_jitter")
@pytest.mark.parametrize(
    "failure",
    [
        errors.Unavailable("message broker unavailable"),
        TransientError("create job: HTTP 503"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=["unavailable", "transient-error", "connection-reset", "timeout"],
)
async def test_every_transient_failure_backs_off(
    amqp_url: str, topology: Topology, failure: Exception
) -> None:
    calls = 0
    handled = asyncio.Event()

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise failure
        handled.set()

    async with DelayShuttle(amqp_url, topology, "dispatcher.job-requested") as shuttle:
        await _run_consumer(
            amqp_url, topology, handler, requested("o-2"), handled.wait, max_attempts=1
        )
    assert [(d, h["x-kriten-backoff"]) for d, h in shuttle.passed] == [(1, 1), (5, 2)]


async def test_a_permanent_error_is_dead_lettered_once_with_its_job_id(
    amqp_url: str, topology: Topology
) -> None:
    hooked: list[tuple[str, str]] = []

    async def handler(event: Event) -> None:
        raise PermanentError("task 't' no longer exists")

    async def on_dead_letter(event: Event, reason: str) -> None:
        assert isinstance(event, JobRequested)
        hooked.append((event.job_id, reason))

    async def dead_letter() -> aio_pika.abc.AbstractIncomingMessage:
        return await _get_one(amqp_url, topology.dead_letter_queue)

    message = await _run_consumer(
        amqp_url, topology, handler, requested("p-2"), dead_letter, on_dead_letter=on_dead_letter
    )
    assert isinstance(message, aio_pika.abc.AbstractIncomingMessage)
    headers = message.headers or {}
    assert headers["x-kriten-job-id"] == "p-2"
    assert headers["x-kriten-reason"] == "task 't' no longer exists"
    assert headers["x-kriten-queue"] == topology.queue("dispatcher.job-requested")
    assert hooked == [("p-2", "task 't' no longer exists")]
    assert await _queue_depth(amqp_url, topology.dead_letter_queue) == 0  # only the one


@pytest.mark.usefixtures("no_jitter")
async def test_a_bug_uses_its_attempts_then_is_dead_lettered(
    amqp_url: str, topology: Topology
) -> None:
    calls = 0
    hooked: list[str] = []

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _database_down()  # a transient failure first: it uses no attempt
        raise KeyError("a bug")

    async def on_dead_letter(event: Event, reason: str) -> None:
        hooked.append(reason)

    async def dead_letter() -> aio_pika.abc.AbstractIncomingMessage:
        return await _get_one(amqp_url, topology.dead_letter_queue)

    async with DelayShuttle(amqp_url, topology, "dispatcher.job-requested") as shuttle:
        message = await _run_consumer(
            amqp_url,
            topology,
            handler,
            requested("b-1"),
            dead_letter,
            on_dead_letter=on_dead_letter,
            max_attempts=3,
        )
    assert calls == 4  # one transient failure, then three attempts
    assert [
        (d, h.get("x-kriten-attempt"), h.get("x-kriten-backoff")) for d, h in shuttle.passed
    ] == [
        (1, 1, 1),
        (1, 2, None),
        (1, 3, None),
    ]
    assert isinstance(message, aio_pika.abc.AbstractIncomingMessage)
    headers = message.headers or {}
    assert headers["x-kriten-job-id"] == "b-1"
    assert str(headers["x-kriten-reason"]).startswith("gave up after 3 attempts: KeyError")
    (reason,) = hooked
    assert reason.startswith("gave up after 3 attempts")


class _GatedExchange:
    """Stands in for a confirmed channel's exchange: records what is sent and confirmed,
    in order, and confirms only once the test opens the gate."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Event]]] = []
        self.steps: list[tuple[str, str]] = []  # ("sent" | "confirmed", event name)
        self.gate = asyncio.Event()

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: object) -> None:
        events = decode(routing_key, message.body)
        names = [_name(e) for e in events]
        self.sent.append((routing_key, events))
        self.steps.extend(("sent", name) for name in names)
        await self.gate.wait()
        # A confirm is a frame from the broker: it never comes back within the call.
        await asyncio.sleep(0)
        self.steps.extend(("confirmed", name) for name in names)

    def in_one_batch(self, one: str, other: str) -> bool:
        """Each was sent before the other was confirmed."""
        at = {step: index for index, step in enumerate(self.steps)}
        return at["sent", one] < at["confirmed", other] and at["sent", other] < at["confirmed", one]


def _name(event: Event) -> str:
    return str(getattr(event, "job_id", None) or getattr(event, "delivery_id", ""))


async def _closed(_self: object) -> None:
    return None


def _gated_publisher(max_batch: int = 100) -> tuple[Publisher, _GatedExchange]:
    exchange = _GatedExchange()
    publisher = Publisher(None, Topology("unused"), max_batch=max_batch)  # type: ignore[arg-type]
    channel = type("Channel", (), {"is_closed": False, "close": _closed})()
    publisher._channel, publisher._exchange = channel, exchange  # type: ignore[assignment]
    return publisher, exchange


def _delivered(delivery_id: str) -> WebhookDelivered:
    return WebhookDelivered(
        delivery_id=delivery_id,
        webhook_id="w",
        received_at=utcnow(),
        scheme="netbox",
        outcome="accepted",
        size=1,
    )


async def test_a_rider_goes_in_the_same_confirmed_batch_as_the_publish() -> None:
    publisher, exchange = _gated_publisher()
    outcomes: list[errors.Unavailable | None] = []
    job = asyncio.create_task(
        publisher.publish(requested("r-1"), riders=[Rider(_delivered("d-1"), outcomes.append)])
    )
    while len(exchange.sent) < 2:
        await asyncio.sleep(0)
    # Both messages are on the wire and neither is confirmed yet: one batch.
    assert sorted(key for key, _ in exchange.sent) == ["job.requested", "webhook.delivery"]
    assert not any(what == "confirmed" for what, _ in exchange.steps)
    assert not job.done()
    exchange.gate.set()
    await job
    await publisher.close()
    assert outcomes == [None]


async def test_a_publish_and_its_riders_are_never_split_across_batches() -> None:
    publisher, exchange = _gated_publisher(max_batch=3)
    first = asyncio.create_task(publisher.publish(requested("a")))
    while not exchange.sent:
        await asyncio.sleep(0)
    # Queued behind the first batch: groups of two that a cap of three must not split.
    later = [
        asyncio.create_task(
            publisher.publish(requested(f"g-{i}"), riders=[Rider(_delivered(f"d-{i}"))])
        )
        for i in range(4)
    ]
    # Let every caller queue its group while the first batch is unconfirmed.
    for _ in range(10):
        await asyncio.sleep(0)
    exchange.gate.set()
    await asyncio.gather(first, *later)
    await publisher.close()
    for i in range(4):
        assert exchange.in_one_batch(f"g-{i}", f"d-{i}")
    # And the cap holds: no message carries more than three events.
    assert all(len(events) <= 3 for _, events in exchange.sent)


async def test_a_failed_batch_tells_the_caller_and_its_riders(topology: Topology) -> None:
    connection = await connect("amqp://guest:guest@127.0.0.1:5672/")
    publisher = Publisher(connection, topology)
    await publisher.open()
    await connection.close()
    outcomes: list[errors.Unavailable | None] = []
    with pytest.raises(errors.Unavailable):
        await publisher.publish(requested("x"), riders=[Rider(_delivered("d"), outcomes.append)])
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], errors.Unavailable)


async def test_a_job_request_and_its_rider_reach_their_queues(
    amqp_url: str, topology: Topology
) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = Publisher(connection, topology)
        await publisher.open()
        await publisher.publish(requested("ride-1"), riders=[Rider(_delivered("d-ride"))])
        await publisher.close()
    # The dispatcher's queue gets the job request alone; the collector's both, each in
    # a message it decodes as before (one class per message).
    assert await _queue_depth(amqp_url, topology.queue("dispatcher.job-requested")) == 1
    kinds: list[str] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(topology.queue("collector.events"))
        while (message := await declared.get(fail=False, no_ack=True)) is not None:
            kinds.extend(type(e).__name__ for e in decode(message.type or "", message.body))
    assert sorted(kinds) == ["JobRequested", "WebhookDelivered"]
