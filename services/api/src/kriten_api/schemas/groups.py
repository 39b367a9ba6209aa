"""The request and answer bodies of `/groups` and their members, and the rules of their
fields that need no database. Which providers may be used depends on the settings, and
who may join which group on `membership`'s rules: those stay with the handler."""

from __future__ import annotations

import re
from typing import Any

from pydantic import AliasChoices, Field, RootModel, field_validator, model_validator

from kriten_api.fields import optional_strings
from kriten_api.schemas import In, Out, Timestamp
from kriten_api.schemas.roles import UUID_SHAPE
from kriten_common import errors

# Directory groups have spaces in their names ("Domain Admins"), so they are allowed.
GROUP_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._@-]{0,126}[A-Za-z0-9._@-])?$")
MEMBERS_SHAPE = 'body must be a list of {"name": ..., "provider": ...}'


class GroupPublic(Out):
    id: str
    name: str
    provider: str
    users: list[str] = Field(description="Member user ids")
    created_at: Timestamp
    updated_at: Timestamp


class GroupBase(In):
    answer = GroupPublic
    name: str | None = Field(default=None, description="Required on create")
    provider: str | None = None
    users: list[str] | None = Field(default=None, description="Member user ids")

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        if not isinstance(value, str) or not GROUP_NAME.match(value) or UUID_SHAPE.match(value):
            raise errors.InvalidInput(
                "name must be 1-128 letters, digits, spaces, '.', '_', '@' or '-', starting"
                " with a letter or digit, and must not look like an id"
            )
        return value

    @field_validator("users", mode="before")
    @classmethod
    def _check_users(cls, value: Any) -> Any:
        # Null is an empty list, as it has always been.
        return optional_strings(value, "users must be a list of user ids")


class GroupCreate(GroupBase):
    name: str = Field(description="Unique per provider")
    provider: str | None = Field(default="local", description="local or active_directory")


class GroupUpdate(GroupBase):
    """Only the members can change: the name and provider are the group's identity."""


class MemberPublic(Out):
    """A group of a user, or a user of a group."""

    id: str
    # A user's is its username.
    name: str = Field(validation_alias=AliasChoices("name", "username"))
    provider: str


class MemberRef(In):
    """A user to add to, or remove from, a group, by username."""

    answer = MemberPublic
    other_names = ("username",)
    name: str = Field(description="The username (or `username`)")
    provider: str | None = Field(default=None, description="The group's, if given")

    @model_validator(mode="before")
    @classmethod
    def _username_is_the_name(cls, item: Any) -> Any:
        # Kriten's clients also sent `username`; `name` wins when both are there.
        if isinstance(item, dict) and "name" not in item and "username" in item:
            item = {**item, "name": item["username"]}
            del item["username"]
        if isinstance(item, dict) and "name" not in item:
            raise errors.InvalidInput("name is required for every user")
        return item

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise errors.InvalidInput("name is required for every user")
        return value


class GroupMembers(RootModel[list[MemberRef]]):
    """Users to add to, or remove from, a group."""

    @model_validator(mode="before")
    @classmethod
    def _a_list_of_objects(cls, body: Any) -> Any:
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise errors.InvalidInput(MEMBERS_SHAPE)
        return body
