"""The api app without RabbitMQ, for the api tests that do not test the broker.

Starting the real broker context cost every api test about half a second: sixteen
quorum queues declared (and deleted again by the `topology` fixture), a `job.finished`
subscription and the dead-letter gauge's channel. Most api tests only need publishing to
succeed; `without_broker` swaps those contexts for a `RecordingPublisher`, which keeps
what the app published for the test to look at. Tests marked `broker` (see
`tests/api/conftest.py`) keep the real broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

from aiohttp import web

from kriten_api import app as api_app
from kriten_api.job_events import JobEvents
from kriten_api.keys import JOB_EVENTS, PUBLISHER
from kriten_api.routes import dead_letters
from kriten_common.amqp import Publisher, Rider, Settled
from kriten_common.messages import Event


class RecordingPublisher:
    """The api's publisher port (`kriten_common.amqp.Publisher`'s methods): every event
    is recorded and confirmed at once, in the order it was published."""

    def __init__(self) -> None:
        self.published: list[Event] = []

    async def open(self) -> None:
        pass

    async def publish(
        self, *events: Event, mandatory: bool = True, riders: Sequence[Rider] = ()
    ) -> None:
        self.published.extend(events)
        for rider in riders:
            self.enqueue(rider.event, mandatory=rider.mandatory, settled=rider.settled)

    def enqueue(
        self, event: Event, *, mandatory: bool = True, settled: Settled | None = None
    ) -> None:
        self.published.append(event)
        if settled is not None:
            settled(None)

    async def close(self) -> None:
        pass


def _is_broker_context(context: object) -> bool:
    return getattr(context, "__qualname__", "") == "broker_context.<locals>.context"


def without_broker(app: web.Application, publisher: RecordingPublisher) -> None:
    """Replaces the app's broker contexts (connection and publisher, the dead-letter
    gauge, the `job.finished` subscription) by one that installs `publisher`.

    Without a connection the app announces no `config.changed` and has no broker
    readiness check; waiters for a job still re-read it (see `kriten_api.job_events`).
    """
    contexts = list(app.cleanup_ctx)
    removed = [
        c
        for c in contexts
        if _is_broker_context(c) or c is dead_letters.gauge_context or c is api_app._job_events
    ]
    # Loud when the app's contexts change, rather than a test quietly on the real broker.
    assert len(removed) == 3, f"the api's broker contexts are not what {__name__} expects"

    async def recording(app: web.Application) -> AsyncIterator[None]:
        app[PUBLISHER] = cast(Publisher, publisher)
        app[JOB_EVENTS] = JobEvents()
        yield

    kept = [c for c in contexts if not any(c is r for r in removed)]
    position = contexts.index(removed[0])
    kept.insert(position, recording)
    del app.cleanup_ctx[:]
    app.cleanup_ctx.extend(kept)
