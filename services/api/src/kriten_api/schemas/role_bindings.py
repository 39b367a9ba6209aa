"""The request and answer bodies of `/role_bindings`."""

from __future__ import annotations

from pydantic import Field

from kriten_api.schemas import In, Out


class RoleBindingOut(Out):
    id: str
    name: str
    role_name: str
    role_id: str
    subject_kind: str
    subject_provider: str
    subject_name: str
    subject_id: str
    created_at: str
    updated_at: str


class RoleBindingIn(In):
    answer = RoleBindingOut
    name: str | None = Field(default=None, description="Required on create")
    role_name: str | None = Field(default=None, description="Required on create")
    subject_kind: str | None = Field(default=None, description="groups or users")
    subject_provider: str | None = None
    subject_name: str | None = Field(default=None, description="Required on create")
