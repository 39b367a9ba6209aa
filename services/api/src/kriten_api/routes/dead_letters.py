"""Dead letters: list, inspect and replay what the consumers gave up on, and the
`kriten_dead_letters` gauge.

Admin only (`is_admin`): a dead letter carries any event of the system, whoever's job it
is, and replaying one runs it again as whoever sent it; no resource permission covers
that. The dead-letter queue is the store (see `kriten_common.dead_letters`): nothing is
copied to the database, and reading leaves every message in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import Gauge

from kriten_api.authentication import authenticate
from kriten_api.authz import require_admin
from kriten_api.keys import BROWSING, CONNECTION, GAUGE, SETTINGS
from kriten_api.listing import Window, list_response
from kriten_api.openapi import route
from kriten_api.schemas import dump
from kriten_api.schemas.dead_letters import DeadLetterPublic, DeadLetterSummaryPublic
from kriten_common import dead_letters as store
from kriten_common import errors
from kriten_common.amqp import Topology
from kriten_common.http import METRICS_REGISTRY
from kriten_common.logging import get_logger

log = get_logger(__name__)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
GAUGE_INTERVAL_SECONDS = 15.0


def _topology(app: web.Application) -> Topology:
    return Topology(app[SETTINGS].amqp_prefix)


async def list_dead_letters(request: web.Request) -> web.Response:
    """The oldest first; `Content-Range` is the queue's depth."""
    require_admin(await authenticate(request))
    window = Window.of(request)
    limit, offset = window.limit, window.offset
    limit = min(DEFAULT_LIMIT if limit is None else limit, MAX_LIMIT)
    offset = min(offset, store.MAX_BROWSE)
    app = request.app
    async with app[BROWSING]:
        total = await store.count(app[CONNECTION], _topology(app))
        records = await store.browse(app[CONNECTION], _topology(app), limit=offset + limit)
    # The depth counts only messages ready at that moment: never less than was seen.
    total = max(total, len(records))
    listed = records[offset:]
    return list_response([dump(DeadLetterSummaryPublic.model_validate(r)) for r in listed], total)


async def get_dead_letter(request: web.Request) -> web.Response:
    require_admin(await authenticate(request))
    dead_letter_id = request.match_info["id"]
    app = request.app
    async with app[BROWSING]:
        record = await store.find(app[CONNECTION], _topology(app), dead_letter_id)
    if record is None:
        raise errors.NotFound(f"dead letter {dead_letter_id!r} not found")
    return web.json_response(dump(DeadLetterPublic.model_validate(record)))


async def replay_dead_letter(request: web.Request) -> web.Response:
    """Back to its work queue with fresh attempts; gone from the dead-letter queue."""
    require_admin(await authenticate(request))
    dead_letter_id = request.match_info["id"]
    app = request.app
    async with app[BROWSING]:
        record = await store.replay(app[CONNECTION], _topology(app), dead_letter_id)
    if record is None:
        raise errors.NotFound(f"dead letter {dead_letter_id!r} not found")
    return web.json_response(dump(DeadLetterPublic.model_validate(record)))


# --- the gauge ---


async def refresh_gauge(app: web.Application) -> None:
    """Sets the gauge to the queue's depth; on a broker error keeps the last value."""
    if not app[CONNECTION].connected.is_set():
        # Down: nothing to count, and the cut is logged once (`broker_connection_lost`).
        return
    try:
        depth = await store.count(app[CONNECTION], _topology(app))
    except errors.Unavailable:
        log.warning("dead_letters_gauge_not_refreshed")  # count() logged the cause
        return
    app[GAUGE].set(depth)


async def _refresh_forever(app: web.Application) -> None:
    while True:
        try:
            await refresh_gauge(app)
        except Exception:
            # Whatever it was, the metric must outlive it; the next round tries again.
            log.warning("dead_letters_gauge_failed", exc_info=True)
        await asyncio.sleep(GAUGE_INTERVAL_SECONDS)


async def gauge_context(app: web.Application) -> AsyncIterator[None]:
    """Refreshes `kriten_dead_letters` every 15 s while the app runs (after the broker
    context, whose connection it uses)."""
    task = asyncio.create_task(_refresh_forever(app))
    yield
    task.cancel()
    # Bounded: a refresh cancelled half-way through opening a channel on a broken
    # connection must not hold up the shutdown.
    await asyncio.wait({task}, timeout=5)


def add_routes(app: web.Application, base: str) -> None:
    app[BROWSING] = asyncio.Lock()
    # Registered with the app, as every metric is, so /metrics names it from the start.
    app[GAUGE] = Gauge(
        "kriten_dead_letters",
        "Messages in the dead-letter queue (those a browse holds at that moment excepted)",
        registry=app[METRICS_REGISTRY],
    )
    item = f"{base}/dead_letters/{{id}}"
    route(
        app,
        "GET",
        f"{base}/dead_letters",
        list_dead_letters,
        summary="Dead letters, oldest first (admin only)",
        description=(
            f"`limit` defaults to {DEFAULT_LIMIT}, at most {MAX_LIMIT}; the list reaches"
            f" {store.MAX_BROWSE} messages deep. Reading leaves them in the queue."
        ),
        response=DeadLetterSummaryPublic,
        listing=True,
        errors=[503],
    )
    route(
        app,
        "GET",
        item,
        get_dead_letter,
        summary="A dead letter, with its headers and decoded events (admin only)",
        response=DeadLetterPublic,
        errors=[503],
    )
    route(
        app,
        "POST",
        f"{item}/replay",
        replay_dead_letter,
        summary="Send a dead letter back to its work queue, with fresh attempts (admin only)",
        description=(
            "At-least-once: the event is on its work queue (confirmed) before the dead"
            " letter is removed. A job event runs once, since the job id travels with it."
        ),
        response=DeadLetterPublic,
        errors=[409, 503],
    )
