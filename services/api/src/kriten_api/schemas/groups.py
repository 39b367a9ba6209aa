"""The request and answer bodies of `/groups` and their members."""

from __future__ import annotations

from pydantic import Field, RootModel

from kriten_api.schemas import In, Out


class GroupOut(Out):
    id: str
    name: str
    provider: str
    users: list[str] = Field(description="Member user ids")
    created_at: str
    updated_at: str


class GroupIn(In):
    answer = GroupOut
    name: str | None = Field(default=None, description="Required on create")
    provider: str | None = None
    users: list[str] | None = Field(default=None, description="Member user ids")


class MemberOut(Out):
    """A group of a user, or a user of a group."""

    id: str
    name: str
    provider: str


class MemberIn(In):
    answer = MemberOut
    other_names = ("username",)
    name: str | None = Field(default=None, description="The username (or `username`)")
    provider: str | None = None


class MembersIn(RootModel[list[MemberIn]]):
    """Users to add to, or remove from, a group."""
