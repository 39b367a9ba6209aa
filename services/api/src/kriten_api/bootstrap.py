"""The built-in users, groups, roles and bindings that exist from the first start.

`ensure_builtins` runs on every start of every api replica. Each built-in is read,
then created or brought back to its definition, in a transaction of its own. When
two replicas start at once, the one that loses the race to insert a row gets an
IntegrityError from the unique constraints, reads the winner's row and carries on.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select
from sqlmodel.sql.expression import SelectOfScalar

from kriten_api.passwords import hash_password_async, needs_rehash, verify_password_async
from kriten_common.clock import utcnow
from kriten_common.db.engine import SessionFactory
from kriten_common.db.models import Group, GroupMember, Role, RoleBinding, User

ROOT_USERNAME = "root"
ADMIN_GROUP = "Admin"
ADMIN_ROLE = "Admin"
ROOT_BINDING = "RootAdminAccess"
LOCAL = "local"
BUILTIN_ROLES: Mapping[str, str] = {
    ADMIN_ROLE: "*",
    "WriteAllRunners": "runners",
    "WriteAllTasks": "tasks",
    "WriteAllJobs": "jobs",
    "WriteAllUsers": "users",
    "WriteAllRoles": "roles",
    "WriteAllRoleBindings": "role_bindings",
    "WriteAllWebhooks": "webhooks",
}
"""Built-in role name → the resource it grants write on, for every id."""

_ATTEMPTS = 3

T = TypeVar("T", bound=SQLModel)


def _apply(row: SQLModel, wanted: Mapping[str, Any]) -> bool:
    """Set the `wanted` attributes that differ; True when any did."""
    changed = False
    for name, value in wanted.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


async def _unchanged(_row: Any) -> bool:
    return False


async def _ensure(
    sessions: SessionFactory,
    query: SelectOfScalar[T],
    *,
    create: Callable[[], T],
    wanted: Mapping[str, Any],
    reconcile: Callable[[T], Awaitable[bool]] = _unchanged,
) -> T:
    """The row `query` finds, created by `create` if missing, with `wanted` applied.

    `reconcile` may change the row further and says whether it did.
    """
    for attempt in range(_ATTEMPTS):
        async with sessions() as session:
            row = (await session.exec(query)).first()
            created = row is None
            if row is None:
                row = create()
            changed = _apply(row, wanted)
            changed = await reconcile(row) or changed
            if not (created or changed):
                return row
            if not created and hasattr(row, "updated_at"):
                row.updated_at = utcnow()
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                # Another replica inserted the same row first: read theirs next time.
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            # The session factory may expire rows on commit; load before it closes.
            await session.refresh(row)
            return row
    raise AssertionError("unreachable")


def _new_role(name: str, resource: str) -> Role:
    return Role(name=name, resource=resource, resource_ids=["*"], access="write", builtin=True)


async def ensure_builtins(sessions: SessionFactory, *, root_password: str) -> None:
    """Create or repair every built-in; set root's password to `root_password`.

    Idempotent: on a database that is already right it only reads (and verifies
    root's password hash once).
    """

    async def set_root_password(user: User) -> bool:
        current = user.password_hash
        if (
            current is not None
            and not needs_rehash(current)
            and await verify_password_async(current, root_password)
        ):
            return False
        user.password_hash = await hash_password_async(root_password)
        return True

    root = await _ensure(
        sessions,
        select(User).where(User.provider == LOCAL, User.username == ROOT_USERNAME),
        create=lambda: User(username=ROOT_USERNAME, provider=LOCAL, builtin=True),
        wanted={"builtin": True},
        reconcile=set_root_password,
    )
    admins = await _ensure(
        sessions,
        select(Group).where(Group.provider == LOCAL, Group.name == ADMIN_GROUP),
        create=lambda: Group(name=ADMIN_GROUP, provider=LOCAL, builtin=True),
        wanted={"builtin": True},
    )
    await _ensure(
        sessions,
        select(GroupMember).where(
            GroupMember.group_id == admins.id, GroupMember.user_id == root.id
        ),
        create=lambda: GroupMember(group_id=admins.id, user_id=root.id),
        wanted={},
    )
    roles: dict[str, Role] = {}
    for name, resource in BUILTIN_ROLES.items():
        roles[name] = await _ensure(
            sessions,
            select(Role).where(Role.name == name),
            create=functools.partial(_new_role, name, resource),
            wanted={
                "resource": resource,
                "resource_ids": ["*"],
                "access": "write",
                "builtin": True,
            },
        )
    admin_role = roles[ADMIN_ROLE]
    await _ensure(
        sessions,
        select(RoleBinding).where(RoleBinding.name == ROOT_BINDING),
        create=lambda: RoleBinding(
            name=ROOT_BINDING,
            role_id=admin_role.id,
            subject_kind="groups",
            subject_provider=LOCAL,
            subject_name=ADMIN_GROUP,
            subject_id=admins.id,
            builtin=True,
        ),
        wanted={
            "role_id": admin_role.id,
            "subject_kind": "groups",
            "subject_provider": LOCAL,
            "subject_name": ADMIN_GROUP,
            "subject_id": admins.id,
            "builtin": True,
        },
    )
