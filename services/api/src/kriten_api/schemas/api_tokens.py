"""The request and answer bodies of `/api_tokens`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class ApiTokenOut(Out):
    id: str
    owner: str
    description: str
    enabled: bool
    expires: str | None
    created_at: str
    updated_at: str
    key: str | None = Field(default=None, description="Only in the create answer")


class ApiTokenIn(In):
    answer = ApiTokenOut
    description: str | None = None
    enabled: bool | None = None
    expires: str | None = Field(default=None, description="RFC 3339 with an offset; null: never")
