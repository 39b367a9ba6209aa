"""The request and answer bodies of `/users`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class UserOut(Out):
    id: str
    username: str
    provider: str
    groups: list[str] = Field(description="Group ids")
    created_at: str
    updated_at: str


class UserIn(In):
    answer = UserOut
    other_names = ("name",)
    username: str | None = Field(default=None, description="Required on create (or `name`)")
    password: str | None = Field(default=None, description="Write-only; local users only")
    provider: str | None = None
    groups: list[str] | None = Field(default=None, description="Group ids or names")
