"""HTTP pieces every service shares: the error middleware, health, readiness, metrics,
the one JSON body reader, and the refusal of control characters in URLs.

Domain errors (`kriten_common.errors`) become `{"error": ...}` with the right status;
aiohttp's own HTTP errors get the same JSON shape; anything else is logged and answered
500 without detail, so no internal text (or secret) reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kriten_common import errors
from kriten_common.consumer_metrics import ConsumerMetrics, PublisherMetrics
from kriten_common.ids import random_hex
from kriten_common.logging import bound_ids, get_logger

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


REQUEST_ID_HEADER = "X-Request-Id"
# What a proxy's request id may look like to be kept as the correlation id; anything
# else (it is whatever the client wrote) is replaced by one of our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


@web.middleware
async def log_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds the request's `correlation_id` (a proxy's `X-Request-Id`, else a new one)
    for every line logged while it is handled; handlers may bind more ids (see
    `kriten_common.logging`)."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    correlation_id = given if _REQUEST_ID.fullmatch(given) else random_hex()
    with bound_ids(correlation_id=correlation_id):
        return await handler(request)


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


# C0 controls, DEL, and the surrogates (which no UTF-8 decodes to, and no database stores).
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


@web.middleware
async def url_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a path or query parameter holding a control character (`%00`, ...).

    No route takes one, and a NUL reaching a query is an error from PostgreSQL (it
    refuses NUL in text), which would be a 500; refusing here covers every handler.
    """
    url = request.rel_url
    texts = [url.path, *url.query.keys(), *url.query.values()]
    if any(_CONTROL.search(text) for text in texts):
        raise errors.InvalidInput("the URL must not contain control characters")
    return await handler(request)


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
    return parse_json(raw)


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request body may have. Kriten's bodies are a
few levels deep; a task's input a few more. Deeper values would reach code that recurses
(validation, `json.dumps`, the database driver) with no bound of its own."""


def parse_json(raw: bytes | str) -> Any:
    """`raw` as JSON, or `InvalidInput`: never another exception, whatever the bytes.

    `json.loads` alone raises `RecursionError` for deep nesting (100000 `[`) and a bare
    `ValueError` for an integer of more than 4300 digits, both of which would be a 500;
    it also accepts `NaN`, `Infinity` and `1e999`, which are not JSON and which
    PostgreSQL's JSON columns refuse later, and `\\u0000`, which PostgreSQL refuses in
    text.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise errors.InvalidInput(f"malformed JSON: {problem}") from None
    except RecursionError:
        raise errors.InvalidInput(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except _NotJsonNumber as problem:
        raise errors.InvalidInput(f"malformed JSON: {problem}") from None
    except ValueError:
        # Python's cap on the digits of an integer (sys.int_max_str_digits, 4300).
        raise errors.InvalidInput("malformed JSON: an integer has too many digits") from None
    _check_tree(value)
    return value


class _NotJsonNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJsonNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NotJsonNumber(f"number out of range: {text[:20]}")
    return number


def _check_tree(value: Any) -> None:
    """Refuses nesting deeper than `MAX_JSON_DEPTH`, and NUL in any string or key, which
    PostgreSQL refuses in text (a 500 there, wherever the string ends up). Iterative, so
    no recursion limit applies."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise errors.InvalidInput("JSON strings must not contain NUL (\\u0000)")
            continue
        if isinstance(item, dict):
            children: list[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise errors.InvalidInput(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object")
    return body


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every dependency answers; else 503 naming the missing ones in `missing`.
    The checks run at once, each bounded, so a probe gets its answer within
    `READINESS_CHECK_TIMEOUT_SECONDS` whatever a dependency does."""
    checks = request.app[READINESS_CHECKS]
    names = list(checks)
    answers = await asyncio.gather(*(_safe(checks[name]) for name in names))
    results = dict(zip(names, answers, strict=True))
    missing = [name for name, ready in results.items() if not ready]
    if not missing:
        return web.json_response({"status": "ok", "checks": results})
    return web.json_response(
        {"status": "unavailable", "missing": missing, "checks": results}, status=503
    )


# Shorter than a probe's timeout (3 s in k8s/): a dependency that does not answer (a
# database host that is gone, a connection attempt waiting out its own 10 s) counts as
# missing, and the probe still gets the body that says so.
READINESS_CHECK_TIMEOUT_SECONDS = 2.0


async def _safe(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), READINESS_CHECK_TIMEOUT_SECONDS)
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
    app = web.Application(
        middlewares=[log_context_middleware, error_middleware, url_middleware],
        client_max_size=client_max_size,
    )
    app[READINESS_CHECKS] = {}
    app[METRICS_REGISTRY] = registry
    # Every service consumes and publishes: their metrics are registered from the start,
    # so /metrics names them (HELP, TYPE) before the first message.
    ConsumerMetrics.of(registry)
    PublisherMetrics.of(registry)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
