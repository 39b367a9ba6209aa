"""RBAC evaluation: who may do what. Pure functions, plus one loader from the database.

A user's permissions are the union of the roles bound to them directly and to their
groups. `write` implies `read`; `*` as a resource or in `resource_ids` matches all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kriten_common.db.models import GroupMember, Role, RoleBinding, User

Access = Literal["read", "write"]
RESOURCES = (
    "runners",
    "tasks",
    "jobs",
    "cronjobs",
    "users",
    "groups",
    "roles",
    "role_bindings",
    "apitokens",
    "webhooks",
    "audit",
)


@dataclass(frozen=True)
class Permission:
    resource: str
    resource_ids: tuple[str, ...]
    access: Access


@dataclass(frozen=True)
class Principal:
    """The caller: a user and everything their roles grant."""

    user_id: str
    username: str
    provider: str
    permissions: frozenset[Permission] = field(default_factory=frozenset)


def grants(permission: Permission, *, resource: str, resource_id: str, access: Access) -> bool:
    if permission.resource not in ("*", resource):
        return False
    if access == "write" and permission.access != "write":
        return False
    return "*" in permission.resource_ids or resource_id in permission.resource_ids


def is_allowed(
    permissions: Iterable[Permission], *, resource: str, resource_id: str, access: Access
) -> bool:
    """True when any permission grants `access` on `resource`/`resource_id`.

    `resource_id="*"` asks for the whole resource (creation), which only a `*` grants.
    """
    return any(
        grants(p, resource=resource, resource_id=resource_id, access=access) for p in permissions
    )


def role_permission(role: Role) -> Permission:
    access: Access = "write" if role.access == "write" else "read"
    return Permission(role.resource, tuple(role.resource_ids), access)


async def load_permissions(session: AsyncSession, user_id: str) -> frozenset[Permission]:
    """The permissions bound to `user_id` directly or through its groups."""
    groups = select(GroupMember.group_id).where(GroupMember.user_id == user_id)
    query = (
        select(Role)
        .join(RoleBinding, col(RoleBinding.role_id) == col(Role.id))
        .where(
            or_(
                (col(RoleBinding.subject_kind) == "users")
                & (col(RoleBinding.subject_id) == user_id),
                (col(RoleBinding.subject_kind) == "groups")
                & col(RoleBinding.subject_id).in_(groups),
            )
        )
    )
    roles = (await session.exec(query)).all()
    return frozenset(role_permission(role) for role in roles)


async def load_principal(session: AsyncSession, user_id: str) -> Principal | None:
    """The user with everything their roles grant, or None when the user is gone."""
    user = await session.get(User, user_id)
    if user is None:
        return None
    return Principal(
        user_id=user.id,
        username=user.username,
        provider=user.provider,
        permissions=await load_permissions(session, user.id),
    )
