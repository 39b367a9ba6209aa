"""The request and answer bodies of `/login`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class LoginIn(In):
    username: str
    password: str
    provider: str | None = Field(default="local", description="local or active_directory")


class TokenOut(Out):
    token: str = Field(description="A JWT, also set as the `token` cookie")
