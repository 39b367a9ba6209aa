"""Request latency by route, method and status (`kriten_api_request_duration_seconds`).

The route label is the matched route's template (`/api/v1/jobs/{id}`), never the
request's path, and the method is the route's own: a client can choose neither a label
value nor, by requesting made-up paths or methods, the number of series. A request that
matches no route (404, 405, a trailing-slash redirect) is counted under
`route="unmatched"`. The time includes streaming: a followed log counts until it ends.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Histogram

UNMATCHED = "unmatched"
# Status of a request whose client went away before the answer (nginx's convention).
CLIENT_CLOSED = 499


def request_metrics_middleware(registry: CollectorRegistry) -> Middleware:
    """The middleware; outermost, so it sees the status the error middleware answered."""
    seconds = Histogram(
        "kriten_api_request_duration_seconds",
        "Time to answer a request, by method, route template and status",
        ("method", "route", "status"),
        registry=registry,
    )
    # Label children by (method, route, status): a finite set (routes are the app's own).
    children: dict[tuple[str, str, int], Histogram] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as http_error:
            status = http_error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            route = request.match_info.route
            if route.resource is None:
                key = ("", UNMATCHED, status)
            else:
                key = (route.method, route.resource.canonical, status)
            child = children.get(key)
            if child is None:
                child = children[key] = seconds.labels(key[0], key[1], str(status))
            child.observe(time.perf_counter() - started)

    return middleware
