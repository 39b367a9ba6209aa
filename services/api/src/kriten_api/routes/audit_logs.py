"""`/audit_logs`: the audit log, newest first (what is recorded: kriten_api.audit)."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import col, select

from kriten_api.authentication import authenticate
from kriten_api.authz import require, visible_to
from kriten_api.keys import SESSIONS
from kriten_api.listing import Window, count, list_response, paginate
from kriten_api.openapi import Query, route
from kriten_api.schemas import dump
from kriten_api.schemas.audit_logs import AuditLogPublic
from kriten_common import errors
from kriten_common.db.models import AuditLog

DEFAULT_MAX = 100


def _count(request: web.Request, name: str, default: int) -> int:
    value = count(request, name)
    return default if value is None else value


async def list_audit_logs(request: web.Request) -> web.Response:
    """Newest first; `?max=N` (Kriten's name) or `?limit=N`, default 100, and `?offset=`."""
    principal = await authenticate(request)
    window = Window(
        limit=_count(request, "max", _count(request, "limit", DEFAULT_MAX)),
        offset=_count(request, "offset", 0),
    )
    query = select(AuditLog).order_by(col(AuditLog.created_at).desc(), col(AuditLog.id))
    query = visible_to(query, principal, "audit", keys=[col(AuditLog.id)])
    async with request.app[SESSIONS]() as session:
        rows, total = await paginate(session, query, window)
    return list_response([dump(AuditLogPublic.model_validate(r)) for r in rows], total)


async def get_audit_log(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    log_id = request.match_info["id"]
    require(principal, "audit", log_id, "read")
    async with request.app[SESSIONS]() as session:
        row = await session.get(AuditLog, log_id)
    if row is None:
        raise errors.NotFound(f"audit log {log_id!r} not found")
    return web.json_response(dump(AuditLogPublic.model_validate(row)))


def add_routes(app: web.Application, base: str) -> None:
    number = {"type": "integer", "minimum": 0}
    route(
        app,
        "GET",
        f"{base}/audit_logs",
        list_audit_logs,
        summary="The audit log, newest first",
        response=AuditLogPublic,
        listing=True,
        query=[Query("max", number, f"Kriten's name for limit (default {DEFAULT_MAX})")],
    )
    route(
        app,
        "GET",
        f"{base}/audit_logs/{{id}}",
        get_audit_log,
        summary="An audit log entry",
        response=AuditLogPublic,
    )
