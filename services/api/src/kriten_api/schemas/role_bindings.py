"""The request and answer bodies of `/role_bindings`, and the rules of their fields. The
role and subject they name are resolved, and the escalation rule checked, by the handler."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from kriten_api.schemas import In, Out, Timestamp
from kriten_api.schemas.roles import check_label
from kriten_common import errors

SUBJECT_KINDS = ("groups", "users")


class RoleBindingPublic(Out):
    id: str
    name: str
    role_name: str
    role_id: str
    subject_kind: str
    subject_provider: str
    subject_name: str
    subject_id: str
    created_at: Timestamp
    updated_at: Timestamp


def _nonempty_string(value: Any, message: str) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput(message)
    return value


class RoleBindingBase(In):
    answer = RoleBindingPublic
    name: str | None = Field(default=None, description="Required on create")
    role_name: str | None = Field(default=None, description="Required on create")
    subject_kind: str | None = Field(default=None, description="groups or users")
    subject_provider: str | None = None
    subject_name: str | None = Field(default=None, description="Required on create")

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        return check_label(value)

    @field_validator("role_name", mode="before")
    @classmethod
    def _check_role_name(cls, value: Any) -> str:
        return _nonempty_string(value, "role_name is required")

    @field_validator("subject_kind", mode="before")
    @classmethod
    def _check_subject_kind(cls, value: Any) -> str:
        if value not in SUBJECT_KINDS:
            raise errors.InvalidInput(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}")
        return str(value)

    @field_validator("subject_provider", mode="before")
    @classmethod
    def _check_subject_provider(cls, value: Any) -> str:
        return _nonempty_string(value, "subject_provider must be a provider name")

    @field_validator("subject_name", mode="before")
    @classmethod
    def _check_subject_name(cls, value: Any) -> str:
        return _nonempty_string(value, "subject_name is required")


class RoleBindingCreate(RoleBindingBase):
    name: str = Field(description="Unique; the binding's items are named by it or by its id")
    role_name: str
    subject_kind: str = Field(default="groups", description="groups or users")
    subject_provider: str = "local"
    subject_name: str


class RoleBindingUpdate(RoleBindingBase):
    """A merge: the fields sent replace the binding's; the name cannot change."""
