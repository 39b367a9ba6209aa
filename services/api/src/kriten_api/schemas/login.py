"""The request and answer bodies of `/login`."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from kriten_api.schemas import In, Out
from kriten_common import errors

LOCAL = "local"


class TokenOut(Out):
    token: str = Field(description="A JWT, also set as the `token` cookie")


class LoginIn(In):
    username: str
    password: str
    provider: str = Field(default=LOCAL, description="local or active_directory")

    @model_validator(mode="before")
    @classmethod
    def _credentials_are_strings(cls, body: Any) -> Any:
        if isinstance(body, dict) and not (
            isinstance(body.get("username"), str) and isinstance(body.get("password"), str)
        ):
            raise errors.InvalidInput("username and password are required strings")
        return body

    @field_validator("provider", mode="before")
    @classmethod
    def _local_unless_named(cls, value: Any) -> Any:
        # Null or empty is the default, as Kriten's clients send it.
        return value or LOCAL
