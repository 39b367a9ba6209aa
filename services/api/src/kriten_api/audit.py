"""The audit log: one middleware that records logins and changes, and `/audit_logs`.

Recorded, with who, provider, event type, category, target, status and time:

- `POST /login` as a `login` event, successful or not. Who is the username and
  provider the body gave; nothing else of the body is kept (never the password).
- Every POST, PUT, PATCH and DELETE under `/api/v1/` that matches a route. `create`:
  POST or PUT on a collection, and `POST /jobs/{task}` (starting a job runs code, the
  change most worth a record; refused attempts are recorded too, which the jobs table
  cannot show). `delete`: DELETE of an item (`DELETE /jobs/{id}` cancels a job).
  `update`: everything else, that is PATCH or PUT of an item and changes to its
  sub-resources (`/groups/{id}/users`, `/tasks/{name}/schema`, ...).

Not recorded: reads, `/logout` and `/refresh`, and the webhook run path, which has a
delivery log of its own and must stay fast. The category is the path segment after
`/api/v1/` and the target the one after it (for a create, the new item's id or name);
both come from the route's template, classified once when it is registered
(`kriten_api.audit_events`).
Writing the record happens after the handler and never changes its answer: a failure
is logged and the response goes out as it was.

Bounds: anyone can send requests that fail before they are authenticated, so rows of
unidentified callers (401s, failed logins) are sampled like the ingress's rejected
deliveries: a token bucket per category, `KRITEN_AUDIT_ANONYMOUS_PER_MINUTE` with a
burst of as many, in memory per replica. What is left out is counted, and the count is
written on the next row of that category that is kept. Requests by authenticated callers
and successful logins are always recorded. Rows older than `KRITEN_AUDIT_RETENTION_DAYS`
are deleted (0 keeps them forever) by the api's maintenance loop, in batches of
`delete_old` (`retention_rule`, run by `kriten_common.retention`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import delete
from sqlalchemy.sql.dml import UpdateBase
from sqlmodel import col, select

from kriten_api.audit_events import Event, audited_route
from kriten_api.authentication import PRINCIPAL
from kriten_api.keys import SAMPLER, SESSIONS
from kriten_api.schemas import accepted_fields
from kriten_api.schemas.login import LoginIn
from kriten_common import errors
from kriten_common.db.models import AuditLog
from kriten_common.http import Handler, response_for
from kriten_common.logging import get_logger
from kriten_common.retention import RetentionRule

log = get_logger(__name__)

ANONYMOUS = "anonymous"
MAX_FIELD = 255


@dataclass
class _Bucket:
    tokens: float
    updated: float
    skipped: int = 0


class AnonymousSampler:
    """Token buckets, one per category, for the rows of unidentified callers.

    The categories are the first path segments of real routes, a fixed set, so the
    buckets are too.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, category: str) -> int | None:
        """None to leave this row out; else how many rows of the category were left out
        since the last one kept (written on this one)."""
        now = self.clock()
        burst = max(1.0, self.per_minute)
        bucket = self._buckets.setdefault(category, _Bucket(tokens=burst, updated=now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * self.per_minute / 60)
        bucket.updated = now
        if bucket.tokens < 1:
            bucket.skipped += 1
            return None
        bucket.tokens -= 1
        skipped, bucket.skipped = bucket.skipped, 0
        return skipped


def delete_old(cutoff: datetime, batch_size: int) -> UpdateBase:
    """Deletes at most `batch_size` of the rows created before `cutoff`."""
    batch = select(AuditLog.id).where(col(AuditLog.created_at) < cutoff).limit(batch_size)
    return (
        delete(AuditLog)
        .where(col(AuditLog.id).in_(batch.scalar_subquery()))
        .execution_options(synchronize_session=False)
    )


def retention_rule(retention_days: float) -> RetentionRule:
    """The audit log's retention; 0 days keeps it forever."""
    kept = timedelta(days=retention_days) if retention_days > 0 else None
    return RetentionRule("audit_logs", kept, delete_old)


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # What the route was registered as (`route()` classifies each one): requests that
    # match no route change nothing, and recording them would only let anyone fill the log.
    audited = audited_route(request)
    if audited is None:
        return await handler(request)
    event = Event(audited.event_type, audited.category, audited.target_in(request.match_info))
    try:
        response = await handler(request)
    except errors.KritenError as error:
        await _record(request, event, response_for(error).status)
        raise
    except web.HTTPException as error:
        await _record(request, event, error.status)
        raise
    except Exception:
        await _record(request, event, 500)
        raise
    await _record(request, event, response.status, response)
    return response


async def _record(
    request: web.Request, event: Event, status: int, response: web.StreamResponse | None = None
) -> None:
    try:
        row = await _row(request, event, status, response)
        if row.user_id is None and not (event.event_type == "login" and row.status == "success"):
            # Nobody identified: anyone can send these, as many as they like.
            skipped = request.app[SAMPLER].admit(event.category)
            if skipped is None:
                return
            if skipped:
                row.detail = f"{row.detail} ({skipped} similar not recorded before this one)"
        async with request.app[SESSIONS]() as session:
            session.add(row)
            await session.commit()
    except Exception:
        # The change itself is done (or refused); the audit log must not change that.
        log.exception(
            "audit_write_failed",
            method=request.method,
            path=request.path,
            status=status,
            event_type=event.event_type,
        )


async def _row(
    request: web.Request, event: Event, status: int, response: web.StreamResponse | None
) -> AuditLog:
    user_id: str | None = None
    if event.event_type == "login":
        username, provider = await _login_identity(request)
    elif PRINCIPAL in request:
        principal = request[PRINCIPAL]
        user_id, username, provider = principal.user_id, principal.username, principal.provider
    else:
        username, provider = ANONYMOUS, ""
    succeeded = 200 <= status < 300
    target = event.target
    if target is None and event.event_type == "create" and succeeded:
        target = _created_key(response)
    return AuditLog(
        user_id=user_id,
        username=username[:MAX_FIELD],
        provider=provider[:MAX_FIELD],
        event_type=event.event_type,
        category=event.category[:MAX_FIELD],
        target=target[:MAX_FIELD] if target is not None else None,
        status="success" if succeeded else "failure",
        detail=f"{request.method} {request.path[:1000]} {status}",
    )


async def _login_identity(request: web.Request) -> tuple[str, str]:
    """The username and provider a login gave; the login handler has read the body."""
    try:
        body = json.loads(await request.read())
    except Exception:
        body = None
    if not isinstance(body, dict):
        return ANONYMOUS, ""
    try:
        # The keys as the login handler read them (`Username` is `username`).
        body = accepted_fields(LoginIn, body)
    except errors.InvalidInput:
        return ANONYMOUS, ""
    username = body.get("username")
    provider = body.get("provider") or "local"
    return (
        username if isinstance(username, str) and username else ANONYMOUS,
        provider if isinstance(provider, str) else "",
    )


def _created_key(response: web.StreamResponse | None) -> str | None:
    """The new item's id (or name) from a create answer; nothing else of it is kept."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for field in ("id", "name"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return value
    return None
