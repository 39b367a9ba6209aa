"""The request and answer bodies of `/audit_logs`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import Out, Timestamp


class AuditLogPublic(Out):
    """An audit log entry, under Kriten's field names, so its clients read it unchanged."""

    id: str
    user_id: str | None
    username: str
    provider: str
    event_type: str
    # The row's `category` and `target` (`validation_alias`), named as Kriten names them.
    event_category: str = Field(validation_alias="category")
    event_target: str | None = Field(validation_alias="target")
    status: str
    detail: str | None
    created_at: Timestamp
