"""The request and answer bodies of `/roles`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class RoleOut(Out):
    id: str
    name: str
    resource: str
    resource_ids: list[str]
    access: str
    created_at: str
    updated_at: str


class RoleIn(In):
    answer = RoleOut
    other_names = ("resource_names",)
    name: str | None = Field(default=None, description="Required on create")
    resource: str | None = None
    resource_ids: list[str] | None = Field(default=None, description="Also `resource_names`")
    access: str | None = Field(default=None, description="read or write")
