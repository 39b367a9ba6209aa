"""The request and answer bodies of `/users`, and the rules of their fields that need
no database. Which providers may be used depends on the settings, whether a password is
wanted on the user's provider (the row's, on an update): those stay in the handler."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from kriten_api.fields import optional_strings
from kriten_api.schemas import In, Out, Timestamp
from kriten_common import errors

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAX_PASSWORD_LENGTH = 1024
# The message for a missing password, and for one that is no string.
LOCAL_USERS_NEED_ONE = "password is required for local users"


class UserPublic(Out):
    id: str
    username: str
    provider: str
    groups: list[str] = Field(description="Group ids")
    created_at: Timestamp
    updated_at: Timestamp


class UserBase(In):
    answer = UserPublic
    other_names = ("name",)
    username: str | None = Field(default=None, description="Required on create (or `name`)")
    password: str | None = Field(default=None, description="Write-only; local users only")
    provider: str | None = None
    groups: list[str] | None = Field(default=None, description="Group ids or names")

    @model_validator(mode="before")
    @classmethod
    def _name_is_the_username(cls, body: Any) -> Any:
        # Kriten's user object calls the username `name`; its scripts still send that.
        if isinstance(body, dict) and "username" not in body and "name" in body:
            body = {**body, "username": body["name"]}
            del body["name"]
        return body

    @field_validator("username", mode="before")
    @classmethod
    def _check_username(cls, value: Any) -> Any:
        # Null is left to the type: required on create, "not sent" on an update.
        if value is not None and (not isinstance(value, str) or not USERNAME.match(value)):
            raise errors.InvalidInput(
                "username must be 1-128 letters, digits, '.', '_', '@' or '-',"
                " starting with a letter or digit"
            )
        return value

    @field_validator("password", mode="before")
    @classmethod
    def _check_password(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise errors.InvalidInput(LOCAL_USERS_NEED_ONE)
        if value is not None and len(value) > MAX_PASSWORD_LENGTH:
            raise errors.InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
        return value

    @field_validator("groups", mode="before")
    @classmethod
    def _check_groups(cls, value: Any) -> Any:
        return optional_strings(value, "groups must be a list of group ids")


class UserCreate(UserBase):
    username: str = Field(description="Required (or `name`)")
    provider: str | None = Field(default="local", description="local or active_directory")


class UserUpdate(UserBase):
    """A merge: the password and/or the groups; the username and provider cannot change."""
