"""How many ingress replicas are running, counted from their heartbeats.

Each webhook's rate limit is shared between the replicas: each allows the configured rate
divided by `Peers.count()`, the live replicas, itself included. Every replica publishes an
`IngressHeartbeat` on the broadcast exchange every `interval` seconds (not persistent, not
mandatory, expiring after three intervals), and one with `leaving` when it stops, so the
others take over its share at once. A peer not heard from for three of its intervals is
gone. A replica that hears from a peer it does not know answers at once, so a newcomer
learns of the others within a round trip, not an interval. Nothing is written anywhere:
the run path only reads a number.

While the subscription is down (the broker unreachable) no peer expires: the last known
count holds, and when the subscription comes back every known peer gets three intervals
anew to be heard from.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from kriten_common.amqp import Topology
from kriten_common.logging import get_logger
from kriten_common.messages import Event, IngressHeartbeat, encode

log = get_logger(__name__)
# A peer is gone after this many of its intervals without a heartbeat.
LIFETIME_INTERVALS = 3
# The goodbye of a stopping replica waits no longer than this for the broker.
LEAVING_TIMEOUT_SECONDS = 1.0
# Bounds on what a heartbeat can make a replica hold: a peer's interval as counted here,
# at most this many times this replica's own (replicas share the setting; the margin is
# for a rolling change of it), since a longer one keeps a vanished peer, and divides
# every rate limit, that much longer; and how many peers are remembered (more are
# ignored, and not answered).
MAX_PEER_INTERVAL_FACTOR = 5
MAX_PEERS = 1000


class Peers:
    """The replicas heard from recently. `on_event` takes their heartbeats; `count()` is
    what the run endpoint divides by."""

    def __init__(
        self,
        *,
        interval_seconds: float,
        instance_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex
        self.interval_seconds = interval_seconds
        self._clock = clock
        # Peer → (its interval, when it is gone unless heard from again).
        self._peers: dict[str, tuple[float, float]] = {}
        self._count = 1
        # Set when a newcomer appeared: the announcer answers at once.
        self.newcomer = asyncio.Event()
        # Whether heartbeats can arrive now; while not, no peer expires.
        self.subscribed: Callable[[], bool] = lambda: True

    def count(self) -> int:
        """Live replicas, this one included (at least 1)."""
        return self._count

    def heartbeat(self, *, leaving: bool = False) -> IngressHeartbeat:
        return IngressHeartbeat(
            instance_id=self.instance_id, interval_seconds=self.interval_seconds, leaving=leaving
        )

    async def on_event(self, event: Event) -> None:
        """Handler for `ingress.heartbeat`."""
        if not isinstance(event, IngressHeartbeat) or event.instance_id == self.instance_id:
            return
        if event.leaving:
            self._peers.pop(event.instance_id, None)
        else:
            if event.instance_id not in self._peers:
                if len(self._peers) >= MAX_PEERS:
                    return
                self.newcomer.set()
            interval = min(event.interval_seconds, MAX_PEER_INTERVAL_FACTOR * self.interval_seconds)
            self._peers[event.instance_id] = (
                interval,
                self._clock() + LIFETIME_INTERVALS * interval,
            )
        # The silent are forgotten by `refresh`, every interval: not a scan per heartbeat.
        self._recount()

    def restored(self) -> None:
        """The subscription is back: heartbeats sent meanwhile were lost, so every known
        peer gets its full lifetime anew rather than expiring at once."""
        now = self._clock()
        self._peers = {
            peer: (interval, max(deadline, now + LIFETIME_INTERVALS * interval))
            for peer, (interval, deadline) in self._peers.items()
        }

    def refresh(self) -> int:
        """Forgets peers not heard from in time (unless heartbeats cannot arrive now) and
        returns the count."""
        if self.subscribed():
            now = self._clock()
            for peer in [p for p, (_, deadline) in self._peers.items() if deadline <= now]:
                del self._peers[peer]
        return self._recount()

    def _recount(self) -> int:
        count = 1 + len(self._peers)
        if count != self._count:
            log.info("ingress_peers_changed", replicas=count, previously=self._count)
            self._count = count
        return count


class PeerAnnouncer:
    """Publishes this replica's heartbeats until stopped, then its goodbye."""

    def __init__(
        self, *, connection: AbstractRobustConnection, topology: Topology, peers: Peers
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._peers = peers
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=False)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        self._exchange = await channel.declare_exchange(
            self._topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._task = asyncio.create_task(self._run(), name="ingress-heartbeat")

    async def _run(self) -> None:
        peers = self._peers
        while True:
            peers.newcomer.clear()
            await self._send(peers.heartbeat())
            peers.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peers.newcomer.wait(), peers.interval_seconds)

    async def _send(self, event: IngressHeartbeat) -> None:
        assert self._exchange is not None
        message = aio_pika.Message(
            body=encode([event]),
            content_type="application/json",
            type=event.routing_key,
            message_id=event.message_id,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            # Stale once the receivers would have expired the sender anyway.
            expiration=LIFETIME_INTERVALS * event.interval_seconds,
        )
        try:
            async with asyncio.timeout(max(self._peers.interval_seconds, 1.0)):
                await self._exchange.publish(message, routing_key=event.routing_key)
        except asyncio.CancelledError:
            raise
        except Exception as problem:
            # Logged once per outage, not every interval; a cut of the broker connection
            # is logged once already, as `broker_connection_lost`.
            if not self._failing and self._connection.connected.is_set():
                log.warning(
                    "ingress_heartbeat_failed", error=str(problem) or type(problem).__name__
                )
            self._failing = True
        else:
            self._failing = False

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._exchange is not None and not self._connection.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LEAVING_TIMEOUT_SECONDS):
                    await self._send(self._peers.heartbeat(leaving=True))
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
