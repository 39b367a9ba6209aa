"""The request and answer bodies of `/roles`, and the rules of their fields. Whether the
caller may create or change a role (the escalation rule) is the handler's, via `authz`."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from kriten_api.schemas import In, Out, Timestamp
from kriten_common import errors
from kriten_common.rbac import RESOURCES, Access

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
MAX_RESOURCE_ID_LENGTH = 253


def check_label(value: Any, field: str = "name") -> str:
    """A role or binding name: item routes take the id or the name, so no UUID shapes."""
    if not isinstance(value, str) or not LABEL.match(value) or UUID_SHAPE.match(value):
        raise errors.InvalidInput(
            f"{field} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter"
            " or digit, and must not look like an id"
        )
    return value


class RolePublic(Out):
    id: str
    name: str
    resource: str
    resource_ids: list[str]
    access: str
    created_at: Timestamp
    updated_at: Timestamp


class RoleBase(In):
    answer = RolePublic
    other_names = ("resource_names",)
    name: str | None = Field(default=None, description="Required on create")
    resource: str | None = None
    resource_ids: list[str] | None = Field(default=None, description="Also `resource_names`")
    access: Access | None = Field(default=None, description="read or write")

    @model_validator(mode="before")
    @classmethod
    def _resource_names_are_the_ids(cls, body: Any) -> Any:
        # Kriten called the list `resource_names` in some versions; its scripts still send it.
        if isinstance(body, dict) and "resource_ids" not in body and "resource_names" in body:
            body = {**body, "resource_ids": body["resource_names"]}
            del body["resource_names"]
        return body

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        return check_label(value)

    @field_validator("resource", mode="before")
    @classmethod
    def _check_resource(cls, value: Any) -> str:
        if isinstance(value, str) and (value == "*" or value in RESOURCES):
            return value
        raise errors.InvalidInput(f"resource must be '*' or one of {', '.join(RESOURCES)}")

    @field_validator("resource_ids", mode="before")
    @classmethod
    def _check_resource_ids(cls, value: Any) -> list[str]:
        if (
            not isinstance(value, list)
            or not value
            or not all(
                isinstance(i, str) and 0 < len(i) <= MAX_RESOURCE_ID_LENGTH and i.strip() == i
                for i in value
            )
        ):
            raise errors.InvalidInput(
                "resource_ids must be a non-empty list of names or ids (['*'] for all)"
            )
        return list(dict.fromkeys(value))

    @field_validator("access", mode="before")
    @classmethod
    def _check_access(cls, value: Any) -> Access:
        if value == "read":
            return "read"
        if value == "write":
            return "write"
        raise errors.InvalidInput("access must be 'read' or 'write'")


class RoleCreate(RoleBase):
    name: str = Field(description="Unique; the role's items are named by it or by its id")
    resource: str
    resource_ids: list[str] = Field(description="Also `resource_names`; ['*'] for all")
    access: Access = Field(description="read or write")


class RoleUpdate(RoleBase):
    """A merge: the fields sent replace the role's; the name cannot change."""
