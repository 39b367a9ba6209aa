"""RabbitMQ: the topology, a confirmed publisher and a consumer with explicit outcomes.

Topology (names start with the configured prefix, `kriten` by default):
- one durable topic exchange `<prefix>`;
- a durable quorum queue per consumer (see `WORK_QUEUES`), with a delivery limit so a
  message that keeps crashing its consumer is dead-lettered instead of looping;
- per work queue, delay queues `<queue>.retry.<n>s` (1, 5, 30, 120, 600 and 3600 s) whose expired
  messages dead-letter straight back to that work queue (not to the exchange, so a retry
  reaches only the consumer that failed, not every subscriber); the retry schedule that
  uses them is in `kriten_common.backoff`;
- one dead-letter queue `<prefix>.dead-letter` for messages that failed for good;
- per service instance, for broadcast events (`config.changed` for the ingress,
  `job.finished` for the api), an exclusive, auto-delete queue
  `<prefix>.broadcast.<name>.<random>` (see `BroadcastSubscription`): every instance
  gets every event, and nothing piles up for an instance that is gone.

Publishing waits for the broker's confirm of a persistent message on a quorum queue, so a
returned `publish()` means the event is on disk; an unroutable message raises, unless it
was published with `mandatory=False` (a notification such as `job.finished`, whose only
listeners are the per-instance queues of `BroadcastSubscription`s and may be none).

Given their service's metrics (`kriten_common.consumer_metrics`), consumers count each
message by outcome and time its handling, and read their queue's depth now and then; the
publisher counts what it sent by routing key and outcome.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from kriten_common import errors, messages
from kriten_common.backoff import (
    ATTEMPT_HEADER,
    BACKOFF_HEADER,
    RETRY_DELAYS_SECONDS,
    delay_level,
    header_count,
    jitter_seconds,
    transient_level,
)
from kriten_common.consumer_metrics import (
    QUEUE_DEPTH_INTERVAL_SECONDS,
    ConsumerMetrics,
    MessageOutcome,
    PublisherMetrics,
)
from kriten_common.logging import bound_ids, get_logger, without_ids
from kriten_common.outcomes import PermanentError, RetryableError, Waiting
from kriten_common.transient import is_transient

log = get_logger(__name__)

# The work queues (names without the prefix), named once here.
DISPATCHER_JOBS = "dispatcher.job-requested"
DISPATCHER_CONTROL = "dispatcher.control"
COLLECTOR_EVENTS = "collector.events"
# The collector's completion callbacks: a durable copy of every `job.finished`.
COLLECTOR_CALLBACKS = "collector.callbacks"
# Consumer queue → the routing keys bound to it.
WORK_QUEUES: dict[str, tuple[str, ...]] = {
    DISPATCHER_JOBS: (messages.JobRequested.routing_key,),
    DISPATCHER_CONTROL: (messages.JobCancelRequested.routing_key,),
    COLLECTOR_EVENTS: (
        messages.JobRequested.routing_key,
        messages.JobDispatched.routing_key,
        messages.JobDispatchFailed.routing_key,
        messages.WebhookDelivered.routing_key,
    ),
    COLLECTOR_CALLBACKS: (messages.JobFinished.routing_key,),
}
DELIVERY_LIMIT = 20
PUBLISH_TIMEOUT_SECONDS = 10.0
# Group-commit batches awaiting their confirms at once. Two would let an event that
# arrives just after a batch left go at once instead of after that batch's confirm, but
# on a broker sharing the machine's cores the smaller batches cost it more than they
# saved (measured with benchmarks/ingress_throughput.py): one, as before.
BATCHES_IN_FLIGHT = 1


@dataclass(frozen=True)
class Topology:
    prefix: str = "kriten"

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letter"

    def queue(self, consumer: str) -> str:
        return f"{self.prefix}.{consumer}"

    def retry_queue(self, consumer: str, delay: int) -> str:
        return f"{self.queue(consumer)}.retry.{delay}s"

    def all_queue_names(self) -> list[str]:
        names = [self.dead_letter_queue]
        for consumer in WORK_QUEUES:
            names.append(self.queue(consumer))
            names.extend(self.retry_queue(consumer, d) for d in RETRY_DELAYS_SECONDS)
        return names


class BrokerUnreachable(Exception):
    """The broker could not be reached at start (the message is one line for the user)."""


async def connect(url: str) -> AbstractRobustConnection:
    try:
        connection = await aio_pika.connect_robust(url, timeout=10)
    except Exception as problem:
        reason = str(problem) or type(problem).__name__
        raise BrokerUnreachable(
            f"cannot connect to RabbitMQ at {_without_password(url)}: {reason}"
            " (set KRITEN_AMQP_URL)"
        ) from None
    watch_connection(connection)
    return connection


def watch_connection(connection: AbstractRobustConnection) -> None:
    """Logs a cut of the robust connection once, as `broker_connection_lost` (warning),
    and its return once, as `broker_reconnected`, however many attempts it takes: the
    libraries' own records of the same are demoted to debug (`kriten_common.logging`)."""
    lost = False

    def closed(_sender: Any, problem: BaseException | None = None) -> None:
        nonlocal lost
        # Our own close (shutdown) is no loss; nor is a failed attempt while lost.
        if lost or connection.close_called:
            return
        lost = True
        reason = (str(problem) or type(problem).__name__) if problem is not None else None
        log.warning("broker_connection_lost", error=reason)

    def reconnected(_sender: Any) -> None:
        nonlocal lost
        if lost:
            lost = False
            log.info("broker_reconnected")

    connection.close_callbacks.add(closed)
    connection.reconnect_callbacks.add(reconnected)


def _without_password(url: str) -> str:
    from yarl import URL

    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declares everything (idempotent), so no publish is ever unroutable for want of a queue."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_queue(
        topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    for consumer, routing_keys in WORK_QUEUES.items():
        queue = await channel.declare_queue(
            topology.queue(consumer),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": topology.dead_letter_queue,
            },
        )
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        for delay in RETRY_DELAYS_SECONDS:
            await channel.declare_queue(
                topology.retry_queue(consumer, delay),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": topology.queue(consumer),
                },
            )
    return exchange


async def delete_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Removes every queue and the exchange (tests use this to clean up)."""
    for name in topology.all_queue_names():
        await channel.queue_delete(name)
    await channel.exchange_delete(topology.exchange)


def _message(
    events: Sequence[messages.Event], headers: dict[str, Any] | None = None
) -> aio_pika.Message:
    first = events[0]
    return aio_pika.Message(
        body=messages.encode(events),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=first.routing_key,
        message_id=first.message_id,
        correlation_id=first.correlation_id,
        headers=headers or {},
    )


Settled = Callable[[errors.Unavailable | None], None]
"""Told how an event sent with `Publisher.enqueue` or as a `Rider` ended: None once the
broker confirmed it, else why not."""


@dataclass(frozen=True)
class Rider:
    """An event that goes out in the same confirmed batch as a caller's events, whose
    confirm the caller does not wait for (the delivery-log record of an accepted
    webhook delivery rides with its job request)."""

    event: messages.Event
    settled: Settled | None = None
    mandatory: bool = True


@dataclass(frozen=True)
class _Entry:
    event: messages.Event
    mandatory: bool
    settled: Settled | None


class _Waiter:
    """One `publish()` caller: released when every one of its events is confirmed."""

    def __init__(self, count: int) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._remaining = count

    def settled(self, problem: errors.Unavailable | None) -> None:
        if self.future.done():
            return
        if problem is not None:
            self.future.set_exception(errors.Unavailable(problem.message))
            return
        self._remaining -= 1
        if self._remaining == 0:
            self.future.set_result(None)


class Publisher:
    """Publishes events with publisher confirms; `Unavailable` when the broker is not there.

    Group commit: while a batch waits for its confirms (`max_in_flight` batches at
    once), further events queue up and go together in the next batch (at most
    `max_batch` events), and every caller waiting on them is released by that batch's
    confirms. Under load this turns the broker's
    per-message cost into a per-batch cost; alone, an event goes at once. A batch is one
    message per routing key (a message carries events of one class, see `messages`), all
    published before any confirm is awaited, so events of several kinds share one round
    trip. The events of one `publish()` call, with its riders, are never split across
    batches.

    Every publish is mandatory unless told otherwise: an event that must reach a consumer
    has its queue in the topology, so a return from the broker is a bug and raises. A
    notification that may have no listener at all (`job.finished` while no api runs) is
    published with `mandatory=False`; it goes in a message apart from mandatory events of
    the same routing key, since one message carries one `mandatory` flag.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        *,
        max_batch: int = 100,
        max_in_flight: int = BATCHES_IN_FLIGHT,
        metrics: PublisherMetrics | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._metrics = metrics
        self._max_batch = max(1, max_batch)
        # Group commit off (`max_batch=1`): nothing to amortise, so nothing waits.
        self._max_in_flight = max(1, max_in_flight) if max_batch > 1 else 1_000_000
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        # Groups of entries that must share a batch, in arrival order.
        self._waiting: collections.deque[list[_Entry]] = collections.deque()
        self._batches: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        # on_return_raises: an unroutable message is an error, never a silent drop.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._exchange = await declare_topology(self._channel, self._topology)

    async def _ready_exchange(self) -> AbstractExchange:
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            async with self._lock:
                if self._exchange is None or self._channel is None or self._channel.is_closed:
                    await self.open()
        assert self._exchange is not None
        return self._exchange

    async def publish(
        self, *events: messages.Event, mandatory: bool = True, riders: Sequence[Rider] = ()
    ) -> None:
        """Returns once RabbitMQ confirmed persistent messages carrying `events`.

        `riders` go in the same batch; their outcome goes to their own `settled`, and
        the caller does not wait for them. `mandatory=False` only for an event that may
        rightly have no listener: the broker then drops it quietly when no queue is
        bound to its routing key.
        """
        if not events:
            self._enqueue([_Entry(r.event, r.mandatory, r.settled) for r in riders])
            return
        waiter = _Waiter(len(events))
        group = [_Entry(event, mandatory, waiter.settled) for event in events]
        group.extend(_Entry(r.event, r.mandatory, r.settled) for r in riders)
        self._enqueue(group)
        # shield: a caller that gives up must not cancel the batch others wait on.
        await asyncio.shield(waiter.future)

    def enqueue(
        self, event: messages.Event, *, mandatory: bool = True, settled: Settled | None = None
    ) -> None:
        """Puts `event` in the next batch and returns at once (no task per event): for
        records nobody waits on; `settled` hears how it ended."""
        self._enqueue([_Entry(event, mandatory, settled)])

    def _enqueue(self, group: list[_Entry]) -> None:
        if not group:
            return
        self._waiting.append(group)
        self._pump()

    def _pump(self) -> None:
        """Starts batches while fewer than `max_in_flight` wait for their confirms."""
        while self._waiting and len(self._batches) < self._max_in_flight:
            # A batch serves many callers: its lines carry none of the first one's ids.
            task = asyncio.create_task(self._send_batch(self._next_batch()), context=without_ids())
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._pump()

    def _next_batch(self) -> list[_Entry]:
        """Whole groups up to `max_batch` events (one group even when larger)."""
        batch = self._waiting.popleft()
        while self._waiting and len(batch) + len(self._waiting[0]) <= self._max_batch:
            batch.extend(self._waiting.popleft())
        return batch

    async def _send_batch(self, batch: list[_Entry]) -> None:
        messages_by_key: dict[tuple[str, bool], list[_Entry]] = {}
        for entry in batch:
            key = (entry.event.routing_key, entry.mandatory)
            messages_by_key.setdefault(key, []).append(entry)
        # Every message is on the wire before the first confirm is awaited.
        await asyncio.gather(
            *(self._send_settling(entries) for entries in messages_by_key.values())
        )

    async def _send_settling(self, entries: list[_Entry]) -> None:
        try:
            await self._send([e.event for e in entries], mandatory=entries[0].mandatory)
        except errors.Unavailable as problem:
            outcome: errors.Unavailable | None = problem
        else:
            outcome = None
        if self._metrics is not None:
            self._metrics.sent(
                entries[0].event.routing_key,
                "confirmed" if outcome is None else "failed",
                len(entries),
            )
        for entry in entries:
            if entry.settled is not None:
                entry.settled(outcome)

    async def _send(self, events: list[messages.Event], *, mandatory: bool) -> None:
        try:
            exchange = await self._ready_exchange()
            await exchange.publish(
                _message(events),
                routing_key=events[0].routing_key,
                mandatory=mandatory,
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            log.warning("publish_failed", routing_key=events[0].routing_key, error=str(problem))
            raise errors.Unavailable("message broker unavailable") from None

    async def close(self) -> None:
        # A finished batch may start the next, so wait until none is left (bounded).
        deadline = asyncio.get_running_loop().time() + PUBLISH_TIMEOUT_SECONDS
        while self._batches:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._batches), timeout=left)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()


EventHandler = Callable[[messages.Event], Awaitable[None]]
# Called with the event and the reason just before it goes to the dead-letter queue, so
# the owner can record the end on the job; if it raises, the message is requeued whole.
DeadLetterHook = Callable[[messages.Event, str], Awaitable[None]]


def _job_id(event: messages.Event) -> str | None:
    job_id = getattr(event, "job_id", None)
    return job_id if isinstance(job_id, str) else None


def _log_ids(event: messages.Event) -> dict[str, str | None]:
    """The ids a consumer binds while it handles `event` (see `kriten_common.logging`)."""
    webhook_id = getattr(event, "webhook_id", None)
    return {
        "correlation_id": event.correlation_id,
        "job_id": _job_id(event),
        "webhook_id": webhook_id if isinstance(webhook_id, str) else None,
    }


class Consumer:
    """Consumes one work queue; a handler's outcome decides ack, retry or dead-letter.

    Each event of a message is handled in turn; the message is acked once every event
    was handled, retried alone, or dead-lettered alone. What a failure does:

    - transient (`kriten_common.transient.is_transient`: the database, the broker or the
      Kubernetes API unavailable): back off through the delay queues, 1 → 5 → 30 → 120 s
      and 120 s from then on, for as long as it lasts; no attempt is used (see
      `kriten_common.backoff`);
    - `PermanentError`: dead-letter at once;
    - `Waiting`: retry after its delay, for as long as it says so; no attempt is used;
    - anything else (`RetryableError`, a bug): retry, using one of `max_attempts`, then
      dead-letter.

    Before dead-lettering an event, `on_dead_letter` is awaited with the reason. Messages
    waiting in a delay queue are durable there, so a shutdown loses none. `stop()` stops
    consuming first, then waits for in-flight messages, so a shutdown never cancels a
    half-handled one. With `metrics`, a message counts once, as its worst event's fate
    (dead-letter, then retry, then ack).
    """

    def __init__(
        self,
        *,
        connection: AbstractRobustConnection,
        topology: Topology,
        consumer: str,
        handler: EventHandler,
        prefetch: int = 32,
        max_attempts: int = 10,
        on_dead_letter: DeadLetterHook | None = None,
        metrics: ConsumerMetrics | None = None,
        depth_interval: float = QUEUE_DEPTH_INTERVAL_SECONDS,
        event_concurrency: int = 1,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._consumer = consumer
        # How many events of one message are handled at once. One (in order) where order
        # matters; more where each event waits on something slow of its own (a callback
        # receiver), so that one of them does not hold back the rest of the message.
        self._event_slots = asyncio.Semaphore(event_concurrency)
        self._in_order = event_concurrency == 1
        self._handler = handler
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._on_dead_letter = on_dead_letter
        self._metrics = metrics
        # Bound once: a message costs an increment and an observation, no lookup.
        self._queue_metrics = None if metrics is None else metrics.queue(consumer)
        self._depth_interval = depth_interval
        self._depth_task: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        await declare_topology(self._channel, self._topology)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self._topology.queue(self._consumer))
        self._tag = await self._queue.consume(self._on_message)
        if self._metrics is not None:
            self._depth_task = asyncio.create_task(
                self._watch_depth(self._metrics), name=f"queue-depth-{self._consumer}"
            )

    async def _watch_depth(self, metrics: ConsumerMetrics) -> None:
        """Reads the queue's depth (its lag) and consumer count every `depth_interval`
        seconds, with a passive declare on a channel of its own (a failing declare closes
        its channel, which must not be the consumer's); on a broker error the last values
        stay."""
        name = self._topology.queue(self._consumer)
        depth, consumers = metrics.depth_gauges(self._consumer)

        async def read() -> None:
            async with await self._connection.channel() as channel:
                queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            depth.set(result.message_count or 0)
            consumers.set(result.consumer_count or 0)

        connected = self._connection.connected
        while True:
            try:
                # Nothing to read while the connection is down (a channel opened then
                # waits, and is cancelled with a warning of aiormq's).
                if connected.is_set():
                    await asyncio.wait_for(read(), timeout=PUBLISH_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as problem:
                # A cut is logged once, as `broker_connection_lost` (`watch_connection`).
                if connected.is_set():
                    log.warning("queue_depth_not_read", queue=self._consumer, error=str(problem))
            await asyncio.sleep(self._depth_interval)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        started = time.perf_counter()
        try:
            outcome = await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)
        bound = self._queue_metrics
        if bound is not None:
            bound.consumed(outcome, time.perf_counter() - started)
            if message.redelivered:
                bound.redelivered.inc()

    async def _process(self, message: AbstractIncomingMessage) -> MessageOutcome:
        try:
            events = messages.decode(message.type or "", message.body)
        except ValueError as problem:
            await self._dead_letter_raw(message, f"undecodable message: {problem}")
            await message.ack()
            return "dead_letter"
        attempt = header_count(message.headers, ATTEMPT_HEADER, 1)
        backoff = header_count(message.headers, BACKOFF_HEADER, 0)
        outcome: MessageOutcome = "ack"

        async def handle(event: messages.Event) -> MessageOutcome:
            # Every line about the event (the handler's and ours) carries its ids.
            async with self._event_slots:
                with bound_ids(**_log_ids(event)):
                    return await self._handle_one(event, attempt, backoff)

        try:
            if self._in_order:
                fates = [await handle(event) for event in events]
            else:
                # All of them end before the message does, also when one fails.
                done = await asyncio.gather(*(handle(e) for e in events), return_exceptions=True)
                if failed := next((d for d in done if isinstance(d, BaseException)), None):
                    raise failed
                fates = [fate for fate in done if not isinstance(fate, BaseException)]
            for handled in fates:
                # What the message counts as: its worst event's fate.
                if handled == "dead_letter" or outcome == "ack":
                    outcome = handled
        except Exception:
            # Could not even retry or dead-letter (broker gone): let it come back.
            log.exception("consumer_message_requeued", queue=self._consumer)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return "requeue"
        await message.ack()
        return outcome

    async def _handle_one(
        self, event: messages.Event, attempt: int, backoff: int
    ) -> MessageOutcome:
        try:
            await self._handler(event)
        except PermanentError as problem:
            await self._dead_letter(event, str(problem), attempt)
            return "dead_letter"
        except Exception as problem:
            if is_transient(problem):
                await self._back_off(event, attempt, backoff, problem)
                return "retry"
            if isinstance(problem, Waiting):
                return await self._retry(event, attempt, problem.delay, str(problem), uses=0)
            if isinstance(problem, RetryableError):
                delay, reason = problem.delay, str(problem)
            else:
                log.exception("event_handler_failed", queue=self._consumer, job_id=_job_id(event))
                delay, reason = 1.0, f"{type(problem).__name__}: {problem}"
            return await self._retry(event, attempt, delay, reason)
        return "ack"

    async def _back_off(
        self, event: messages.Event, attempt: int, backoff: int, problem: Exception
    ) -> None:
        hint = problem.delay if isinstance(problem, RetryableError) else 0.0
        level = transient_level(backoff, hint)
        # No traceback: an outage fails every event the same way, and it is not a bug.
        log.warning(
            "event_backoff_scheduled",
            queue=self._consumer,
            job_id=_job_id(event),
            correlation_id=event.correlation_id,
            delay=level,
            backoff=backoff + 1,
            attempt=attempt,
            error=f"{type(problem).__name__}: {problem}",
        )
        await asyncio.sleep(jitter_seconds(level))
        await self._send_to_queue(
            self._topology.retry_queue(self._consumer, level),
            event,
            {ATTEMPT_HEADER: attempt, BACKOFF_HEADER: backoff + 1},
        )
        if self._metrics is not None:
            self._metrics.retried(self._consumer, "transient")

    async def _retry(
        self, event: messages.Event, attempt: int, delay: float, reason: str, *, uses: int = 1
    ) -> MessageOutcome:
        """Sends `event` through a delay queue, spending `uses` attempts (0: `Waiting`)."""
        if uses and attempt >= self._max_attempts:
            await self._dead_letter(event, f"gave up after {attempt} attempts: {reason}", attempt)
            return "dead_letter"
        level = delay_level(delay)
        log.info(
            "event_retry_scheduled",
            queue=self._consumer,
            job_id=_job_id(event),
            delay=level,
            attempt=attempt,
            reason=reason,
        )
        # No backoff header: a transient streak after this starts again at the shortest
        # delay.
        await self._send_to_queue(
            self._topology.retry_queue(self._consumer, level),
            event,
            {ATTEMPT_HEADER: attempt + uses},
        )
        if self._metrics is not None:
            self._metrics.retried(self._consumer, "attempt")
        return "retry"

    async def _dead_letter(self, event: messages.Event, reason: str, attempt: int) -> None:
        job_id = _job_id(event)
        log.warning(
            "event_dead_lettered",
            queue=self._consumer,
            job_id=job_id,
            correlation_id=event.correlation_id,
            reason=reason,
            attempt=attempt,
        )
        if self._on_dead_letter is not None:
            await self._on_dead_letter(event, reason)
        headers: dict[str, Any] = {"x-kriten-reason": reason}
        if job_id is not None:
            headers["x-kriten-job-id"] = job_id
        await self._send_to_queue(self._topology.dead_letter_queue, event, headers)
        if self._metrics is not None:
            self._metrics.dead_lettered(self._consumer)

    async def _send_to_queue(
        self, queue: str, event: messages.Event, headers: dict[str, Any]
    ) -> None:
        assert self._channel is not None
        headers = {"x-kriten-queue": self._topology.queue(self._consumer), **headers}
        await self._channel.default_exchange.publish(
            _message([event], headers), routing_key=queue, timeout=PUBLISH_TIMEOUT_SECONDS
        )

    async def _dead_letter_raw(self, message: AbstractIncomingMessage, reason: str) -> None:
        assert self._channel is not None
        log.warning("message_dead_lettered", queue=self._consumer, reason=reason)
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                type=message.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    "x-kriten-reason": reason,
                    "x-kriten-queue": self._topology.queue(self._consumer),
                },
            ),
            routing_key=self._topology.dead_letter_queue,
        )
        if self._metrics is not None:
            self._metrics.dead_lettered(self._consumer)

    async def stop(self, grace_seconds: float = 20.0) -> None:
        if self._depth_task is not None:
            self._depth_task.cancel()
            # Bounded: a read cancelled half-way through opening a channel on a broken
            # connection must not hold up the shutdown.
            await asyncio.wait({self._depth_task}, timeout=5)
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_seconds)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


async def _declare_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    # Broadcasts need only the exchange, not every work queue of the topology.
    return await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


class BroadcastSubscription:
    """Every event of `routing_keys` delivered to this instance, for as long as it runs.

    For notifications every instance must see (cache invalidation), unlike the work
    queues, where one consumer takes each message. The queue is exclusive and
    auto-delete, so it disappears with the instance; messages are not acknowledged and
    not retried, so a handler must be cheap and a lost event must be tolerable (callers
    keep a safety net such as a short cache TTL). After the robust connection comes
    back, `on_restored` runs: events sent while the connection was down are lost, so
    the caller should assume everything changed.
    """

    def __init__(
        self,
        *,
        connection: AbstractRobustConnection,
        topology: Topology,
        name: str,
        routing_keys: Sequence[str],
        handler: EventHandler,
        on_restored: Callable[[], None] | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._queue_name = f"{topology.prefix}.broadcast.{name}.{uuid.uuid4().hex[:12]}"
        # Labelled without the random suffix, so a restart adds no series.
        self._queue_metrics = None if metrics is None else metrics.queue(f"broadcast.{name}")
        self._routing_keys = tuple(routing_keys)
        self._handler = handler
        self._on_restored = on_restored
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def active(self) -> bool:
        """Whether events can arrive now (false while the connection is down)."""
        return (
            self._tag is not None
            and self._channel is not None
            and not self._channel.is_closed
            and not self._connection.is_closed
        )

    async def start(self) -> None:
        channel = await self._connection.channel()
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        exchange = await _declare_exchange(channel, self._topology)
        queue = await channel.declare_queue(self._queue_name, exclusive=True, auto_delete=True)
        for key in self._routing_keys:
            await queue.bind(exchange, routing_key=key)
        self._queue = queue
        self._tag = await queue.consume(self._on_message, no_ack=True)
        channel.reopen_callbacks.add(self._restored)

    def _restored(self, *_args: Any) -> None:
        # Debug: the connection's return is logged once, as `broker_reconnected`.
        log.debug("broadcast_subscription_restored", queue=self._queue_name)
        if self._on_restored is not None:
            self._on_restored()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        outcome = await self._handle(message)
        if self._queue_metrics is not None:
            self._queue_metrics.consumed(outcome, time.perf_counter() - started)

    async def _handle(self, message: AbstractIncomingMessage) -> MessageOutcome:
        try:
            events = messages.decode(message.type or "", message.body)
        except ValueError as problem:
            log.warning("broadcast_undecodable", queue=self._queue_name, error=str(problem))
            return "reject"
        outcome: MessageOutcome = "ack"
        for event in events:
            with bound_ids(**_log_ids(event)):
                try:
                    await self._handler(event)
                except Exception:
                    log.exception("broadcast_handler_failed", queue=self._queue_name)
                    outcome = "reject"
        return outcome

    async def stop(self) -> None:
        tag, self._tag = self._tag, None
        if self._connection.is_closed:
            # The exclusive queue went with the connection; a robust channel would wait
            # for a reconnect that never comes.
            return
        if self._queue is not None and tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


async def publish_broadcast(
    connection: AbstractRobustConnection,
    topology: Topology,
    *events: messages.Event,
    metrics: PublisherMetrics | None = None,
) -> None:
    """Publishes events for `BroadcastSubscription`s, waiting for the broker's confirm.

    Not mandatory, unlike `Publisher`: when no instance is subscribed the event has no
    one to tell, which is not an error. Raises `errors.Unavailable` when the broker is not
    there.
    """
    if not events:
        return
    routing_key = events[0].routing_key
    try:
        async with await connection.channel(publisher_confirms=True) as channel:
            exchange = await _declare_exchange(channel, topology)
            await exchange.publish(
                _message(list(events)), routing_key=routing_key, timeout=PUBLISH_TIMEOUT_SECONDS
            )
    except asyncio.CancelledError:
        raise
    except Exception as problem:
        log.warning("broadcast_failed", routing_key=routing_key, error=str(problem))
        if metrics is not None:
            metrics.sent(routing_key, "failed", len(events))
        raise errors.Unavailable("message broker unavailable") from None
    if metrics is not None:
        metrics.sent(routing_key, "confirmed", len(events))
