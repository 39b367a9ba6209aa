"""The request and answer bodies of `/tasks`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kriten_api.schemas import In, Out


class TaskOut(Out):
    name: str
    runner: str
    command: str
    synchronous: bool
    schema_: dict[str, Any] | None = Field(alias="schema")
    timeout_seconds: int | None
    description: str
    created_at: str
    updated_at: str


class TaskIn(In):
    answer = TaskOut
    name: str | None = Field(default=None, description="A DNS-1123 name; only on create")
    runner: str | None = Field(default=None, description="Required on create")
    command: str | None = Field(default=None, description="Required on create")
    synchronous: bool | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    timeout_seconds: int | None = Field(default=None, description="A positive integer")
    description: str | None = None
