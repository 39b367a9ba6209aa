"""The request and answer bodies of `/audit_logs`."""

from __future__ import annotations

from kriten_api.schemas import Out


class AuditLogOut(Out):
    id: str
    user_id: str | None
    username: str
    provider: str
    event_type: str
    event_category: str
    event_target: str | None
    status: str
    detail: str | None
    created_at: str
