"""HTTP pieces every service shares: the error middleware, health, readiness, metrics.

Domain errors (`kriten_common.errors`) become `{"error": ...}` with the right status;
aiohttp's own HTTP errors get the same JSON shape; anything else is logged and answered
500 without detail, so no internal text (or secret) reaches a client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kriten_common import errors
from kriten_common.logging import get_logger

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

STATUS_BY_ERROR: dict[type[errors.KritenError], int] = {
    errors.InvalidInput: 400,
    errors.NotAuthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def response_for(error: errors.KritenError) -> web.Response:
    status = next((code for cls, code in STATUS_BY_ERROR.items() if isinstance(error, cls)), 500)
    headers = None
    if isinstance(error, errors.RateLimited | errors.Unavailable):
        headers = {"Retry-After": str(error.retry_after)}
    return error_response(status, error.message, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.KritenError as error:
        return response_for(error)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        message = http_error.reason.lower()
        if http_error.status == 413:
            message = "request body too large"
        return error_response(http_error.status, message, _kept_headers(http_error))
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal error")


def _kept_headers(http_error: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in http_error.headers.items() if k in ("Allow", "Retry-After")}


async def read_json(request: web.Request) -> Any:
    """The JSON body, or a 400/415 naming what is wrong."""
    content_type = request.content_type
    # curl's `-d` sends application/x-www-form-urlencoded; Kriten's documented commands
    # rely on JSON being read whatever that header says, so it is accepted too.
    accepted = (
        "application/json",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "text/plain",
        "",
    )
    if content_type not in accepted and not content_type.endswith("+json"):
        raise errors.UnsupportedMediaType("content type must be application/json")
    raw = await request.read()
    if not raw.strip():
        raise errors.InvalidInput("request body must be a JSON object")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise errors.InvalidInput(f"malformed JSON: {problem}") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object")
    return body


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[READINESS_CHECKS]
    results = {name: await _safe(check) for name, check in checks.items()}
    status = 200 if all(results.values()) else 503
    return web.json_response(
        {"status": "ok" if status == 200 else "unavailable", "checks": results}, status=status
    )


async def _safe(check: ReadinessCheck) -> bool:
    try:
        return await check()
    except Exception:
        return False


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_REGISTRY])
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def create_service_app(
    *, registry: CollectorRegistry, client_max_size: int = 1024**2
) -> web.Application:
    """An aiohttp app with the error middleware and `/healthz`, `/readyz`, `/metrics`."""
    app = web.Application(middlewares=[error_middleware], client_max_size=client_max_size)
    app[READINESS_CHECKS] = {}
    app[METRICS_REGISTRY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
