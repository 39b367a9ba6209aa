"""Every request-level authorization decision of the api, and the one filter for lists.

`kriten_common.rbac` says whether a set of permissions allows one access; this module
decides what a request needs: the permission on the item, or being its owner; the
escalation rules (no granting, and no acting on an account holding, what the caller does
not hold); the acts reserved to owners and admins; and, for lists, `visible_to`, which
narrows a query to what the caller may read. Handlers call these and decide nothing
themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Mapped
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

from kriten_common import errors
from kriten_common.db.models import Job, Role, RoleBinding
from kriten_common.rbac import (
    Access,
    Permission,
    Principal,
    is_allowed,
    load_permissions,
    role_permission,
)

ALL = "*"

Query = TypeVar("Query", Select[*tuple[Any, ...]], SelectOfScalar[Any])


def may(principal: Principal, resource: str, resource_id: str, access: Access) -> bool:
    return is_allowed(
        principal.permissions, resource=resource, resource_id=resource_id, access=access
    )


def require(principal: Principal, resource: str, resource_id: str, access: Access) -> None:
    if not may(principal, resource, resource_id, access):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def may_item(principal: Principal, resource: str, keys: Iterable[str], access: Access) -> bool:
    """`resource_ids` may name an item by id or by name: either one grants."""
    return any(may(principal, resource, key, access) for key in keys)


def require_item(principal: Principal, resource: str, keys: Iterable[str], access: Access) -> None:
    if not may_item(principal, resource, keys, access):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def may_owner_or(
    principal: Principal, *, owner_id: str, resource: str, resource_id: str, access: Access
) -> bool:
    """Owners act on their own items (tokens, webhooks, cronjobs, jobs) without any role;
    everyone else needs the permission on the item."""
    return owner_id == principal.user_id or may(principal, resource, resource_id, access)


def require_owner_or(
    principal: Principal, *, owner_id: str, resource: str, resource_id: str, access: Access
) -> None:
    if not may_owner_or(
        principal, owner_id=owner_id, resource=resource, resource_id=resource_id, access=access
    ):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def may_read_job(principal: Principal, job: Job) -> bool:
    """A job is read by its owner, or with `jobs:read` on its task."""
    return job.owner_id == principal.user_id or may(principal, "jobs", job.task, "read")


def require_read_job(principal: Principal, job: Job) -> None:
    if not may_read_job(principal, job):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def is_admin(principal: Principal) -> bool:
    """Holds `write` on every item of every resource (the built-in Admin role, or a role
    equal to it): the only callers trusted with what no narrower role can be given."""
    return may(principal, ALL, ALL, "write")


def require_admin(principal: Principal) -> None:
    if not is_admin(principal):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def may_owner_or_admin(principal: Principal, *, owner_id: str) -> bool:
    """For acts that no resource permission may delegate: a webhook's new secret lets its
    holder start the owner's task as the owner, so rotating it (which shows the secret) is
    for the owner, or an admin, alone; `webhooks:write` is not enough."""
    return owner_id == principal.user_id or is_admin(principal)


def require_owner_or_admin(principal: Principal, *, owner_id: str) -> None:
    if not may_owner_or_admin(principal, owner_id=owner_id):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def may_run_as_owner(principal: Principal, *, owner_id: str, task: str) -> bool:
    """Starting a job that runs with another user's permissions (a webhook's test delivery
    or redelivery runs as the webhook's owner): a non-owner must also be allowed to run
    the task themselves (`jobs:write` on it), or access to the webhook alone would let
    them run, with a body of their choosing, what only its owner may run."""
    return owner_id == principal.user_id or may(principal, "jobs", task, "write")


def require_run_as_owner(principal: Principal, *, owner_id: str, task: str) -> None:
    if not may_run_as_owner(principal, owner_id=owner_id, task=task):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)


def require_runner_use(principal: Principal, runner: str) -> None:
    """Putting a task on a runner (creating it there, moving it there, or changing the
    command of a task there): the task's command runs with the runner's secrets and git
    token, so whoever chooses the command must be trusted with the runner itself
    (`runners:write` on it), not only with tasks."""
    require(principal, "runners", runner, "write")


def require_not_builtin(builtin: bool) -> None:
    if builtin:
        raise errors.Forbidden(errors.BUILTIN_MESSAGE)


# --- escalation ---


def holds(principal: Principal, permission: Permission) -> bool:
    """True when the principal holds all that `permission` grants."""
    return all(
        may(principal, permission.resource, resource_id, permission.access)
        for resource_id in permission.resource_ids
    )


def require_holds(principal: Principal, permissions: Iterable[Permission]) -> None:
    """The escalation check: 403 naming the first permission the caller lacks."""
    for permission in sorted(permissions, key=repr):
        if not holds(principal, permission):
            ids = ", ".join(permission.resource_ids)
            raise errors.Forbidden(
                f"{errors.FORBIDDEN_MESSAGE}: cannot grant {permission.access} on"
                f" {permission.resource} [{ids}], which the caller does not hold"
            )


async def require_holds_all_of(session: AsyncSession, principal: Principal, user_id: str) -> None:
    """No acting on an account that can do more than the caller can."""
    if user_id != principal.user_id:
        require_holds(principal, await load_permissions(session, user_id))


async def bound_permissions(
    session: AsyncSession, *, subject_kind: str, subject_id: str
) -> frozenset[Permission]:
    """The permissions bound directly to one group or user (not through its groups)."""
    query = (
        select(Role)
        .join(RoleBinding, col(RoleBinding.role_id) == col(Role.id))
        .where(RoleBinding.subject_kind == subject_kind, RoleBinding.subject_id == subject_id)
    )
    return frozenset(role_permission(role) for role in (await session.exec(query)).all())


# --- lists ---


def readable_ids(principal: Principal, resource: str) -> set[str] | None:
    """The ids (or names) of `resource` the principal may read; None means all of them."""
    ids: set[str] = set()
    for permission in principal.permissions:
        if permission.resource in (ALL, resource):
            if ALL in permission.resource_ids:
                return None
            ids.update(permission.resource_ids)
    return ids


def own_items(query: Query, principal: Principal, *, owner: Mapped[Any]) -> Query:
    """`query` narrowed to the principal's own items: a caller's own list (`/webhooks`,
    `/api_tokens`), which needs no permission; everyone's (`.../all`) needs read on `*`."""
    return query.where(owner == principal.user_id)


def visible_to(
    query: Query,
    principal: Principal,
    resource: str,
    *,
    keys: Iterable[Mapped[Any]],
    owner: Mapped[Any] | None = None,
) -> Query:
    """`query` narrowed to the items of `resource` the principal may read: those a read
    permission names by one of their `keys` (id, name, or for jobs the task), and, where
    items have an `owner` column, the principal's own."""
    allowed = readable_ids(principal, resource)
    if allowed is None:
        return query
    conditions: list[ColumnElement[bool]] = [key.in_(allowed) for key in keys]
    if owner is not None:
        conditions.append(owner == principal.user_id)
    return query.where(or_(*conditions))
